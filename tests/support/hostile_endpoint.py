"""A hostile push endpoint of our own, on loopback, for the attacks on Web Push's
outbound side (tests/attacks/test_push_outbound.py, issue 20).

``HostileEndpoint`` is a threaded plain-HTTP server on 127.0.0.1 (the allowlist takes
http only for a loopback origin). What it does with a request is set by the first
segment of the request's path, so a single server plays every part:

- ``/ok/…``: 201, as a push service that accepts the push;
- ``/redirect-302/…``, ``/redirect-307/…``: a redirect to ``redirect_to`` (another
  loopback URL that a test watches, and that must never be reached);
- ``/gzip/…``: 200, ``Content-Encoding: gzip`` and no Content-Type (so requests would
  guess a charset over the inflated text), a body of about 256 KB that inflates to
  256 MiB of zeros;
- ``/cookies/…``: 201 with 50 ``Set-Cookie`` headers of 60 KiB each;
- ``/drip/…``: a status line written one byte every ``drip_every`` seconds, until the
  client hangs up.

Every request is recorded (``received``) with its headers, when it came, and when
its connection closed. A request that http.server refuses before reading it (a header
line over 64 KiB: 50 cookies sent back, say) is recorded too, with ``refused`` set.
``open_connections(prefix)`` counts the connections still open, and
``max_open(prefix)`` the most that were ever open at once.
"""

from __future__ import annotations

import select
import socket
import time
import zlib
from dataclasses import dataclass
from functools import cache

# Bound now, at import (see tests/support/loopback_http.py).
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback_http import LoopbackServer, RecordingHandler

BOMB_INFLATED = 256 * 2**20
COOKIES, COOKIE_SIZE = 50, 60 * 1024
MODES = ("ok", "redirect-302", "redirect-307", "gzip", "cookies", "drip")


@cache
def gzip_bomb() -> bytes:
    """256 MiB of zeros, gzipped: about 256 KB. Made once per test process."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    chunk = bytes(2**20)
    parts = [packer.compress(chunk) for _ in range(BOMB_INFLATED // len(chunk))]
    return b"".join(parts) + packer.flush()


@dataclass
class Received:
    """One request: header names lower-case; ``closed_at`` once its connection ended
    (time.monotonic(), like ``at``)."""

    mode: str
    method: str
    path: str
    headers: dict[str, str]
    at: float
    closed_at: float | None = None
    refused: str | None = None  # why http.server answered 4xx before reading it


class HostileEndpoint(LoopbackServer):
    """See the module's docstring. Use as a context manager, or close()."""

    def __init__(self, redirect_to: str = "http://127.0.0.1:9/", drip_every: float = 2.0,
                 drip_for: float = 60.0) -> None:
        self.redirect_to = redirect_to
        self.drip_every, self.drip_for = drip_every, drip_for
        self._open: dict[int, Received] = {}
        self._max_open: dict[str, int] = {}
        super().__init__()

    def url(self, mode: str, name: str) -> str:
        """An endpoint URL of ``mode`` on this server; ``name`` keeps it apart."""
        assert mode in MODES, mode
        return f"{self.origin}/{mode}/{name}"

    # -- what came -------------------------------------------------------------------

    def received(self, prefix: str = "/") -> list[Received]:
        """The requests whose path starts with ``prefix``, in order of arrival."""
        with self._changed:
            return [r for r in self._received if r.path.startswith(prefix)]

    def wait_for(self, prefix: str, count: int = 1, timeout: float = 10) -> list[Received]:
        """received(prefix) once it holds ``count``; AssertionError after ``timeout``."""
        return self._wait(lambda: [r for r in self._received if r.path.startswith(prefix)],
                          count, timeout, lambda found: f"{len(found)} to {prefix}")

    def open_connections(self, prefix: str = "/") -> int:
        with self._changed:
            return sum(1 for r in self._open.values() if r.path.startswith(prefix))

    def max_open(self, prefix: str) -> int:
        """The most connections to paths under ``prefix`` ever open at once
        (``prefix`` as a test passed it to watch())."""
        with self._changed:
            return self._max_open.get(prefix, 0)

    def watch(self, prefix: str) -> None:
        """Count, from now on, the most connections under ``prefix`` open at once."""
        with self._changed:
            self._max_open[prefix] = 0

    # -- bookkeeping -----------------------------------------------------------------

    def _opened(self, key: int, request: Received) -> None:
        with self._changed:
            self._received.append(request)
            self._open[key] = request
            for prefix in self._max_open:
                count = sum(1 for r in self._open.values() if r.path.startswith(prefix))
                self._max_open[prefix] = max(self._max_open[prefix], count)
            self._changed.notify_all()

    def _closed(self, key: int) -> None:
        with self._changed:
            request = self._open.pop(key, None)
            if request is not None:
                request.closed_at = time.monotonic()
            self._changed.notify_all()

    # -- the parts it plays ----------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(RecordingHandler):
            def _answer(self) -> None:
                arrived, _body, headers = self.read_request()
                mode = self.path.split("/")[1] if self.path.count("/") >= 2 else "ok"
                request = Received(mode, self.command, self.path, headers, arrived)
                key = id(self)
                endpoint._opened(key, request)
                try:
                    getattr(self, "_" + mode.replace("-", "_"), self._ok)()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass  # the client gave up reading: what the attacks want
                finally:
                    self.close_connection = True
                    endpoint._closed(key)

            do_POST = do_GET = do_PUT = _answer

            def _head(self, status: int, headers: list[tuple[str, str]], length: int) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def _ok(self) -> None:
                self._head(201, [], 0)

            def _redirect(self, status: int) -> None:
                self._head(status, [("Location", endpoint.redirect_to)], 0)

            def _redirect_302(self) -> None:
                self._redirect(302)

            def _redirect_307(self) -> None:
                self._redirect(307)

            def _gzip(self) -> None:
                bomb = gzip_bomb()
                self._head(200, [("Content-Encoding", "gzip")], len(bomb))
                self.wfile.write(bomb)

            def _cookies(self) -> None:
                cookie = "c{}=" + "x" * COOKIE_SIZE + "; Path=/"
                self._head(201, [("Set-Cookie", cookie.format(i)) for i in range(COOKIES)], 0)

            def _drip(self) -> None:
                """The status line, a byte at a time; ends once the client hangs up."""
                line = b"HTTP/1.1 201 Created\r\nX-Drip: " + b"." * 4096
                connection: socket.socket = self.connection
                ends = time.monotonic() + endpoint.drip_for
                for byte in line:
                    if time.monotonic() > ends:
                        return
                    connection.sendall(bytes([byte]))
                    ready, _, _ = select.select([connection], [], [], endpoint.drip_every)
                    if ready and not connection.recv(1):
                        return  # the client closed its side

            def send_error(self, code: int, message: str | None = None,
                           explain: str | None = None) -> None:
                path = getattr(self, "path", "") or ""
                mode = path.split("/")[1] if path.count("/") >= 2 else "?"
                now = time.monotonic()
                endpoint._opened(id(self), Received(mode, getattr(self, "command", "") or "",
                                                    path, {}, now, refused=message or str(code)))
                endpoint._closed(id(self))
                super().send_error(code, message, explain)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests read ``received``

        return Handler
