"""The scaffolding of the tests' own HTTP servers on 127.0.0.1: a free port, a thread
that serves, what came recorded under one condition, and a clean close. The scripted
push endpoint (tests/support/push_service.py) and the hostile endpoint
(tests/support/hostile_endpoint.py) are built on it; each gives its own handler."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Bound now, at import: once an app is built in this process, eventlet's green copy of
# http.server can replace the real one in sys.modules, and a server made from it hangs
# in shutdown().
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class RecordingHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, and the request as a test records it."""

    protocol_version = "HTTP/1.1"

    def read_request(self) -> tuple[float, bytes, dict[str, str]]:
        """The arrival time (time.monotonic()), the body, the headers (names in
        lower case)."""
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        return arrived, body, {k.lower(): v for k, v in self.headers.items()}


class LoopbackServer:
    """Subclasses set their own state, then call ``super().__init__()``, and give
    ``_handler()``; requests they record go in ``_received`` under ``_changed``."""

    def __init__(self, url_host: str = "127.0.0.1") -> None:
        self._received: list[Any] = []
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.origin = f"http://{url_host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _wait(self, found: Callable[[], list[Any]], count: int, timeout: float,
              what: Callable[[list[Any]], str]) -> list[Any]:
        """``found()`` (called under the condition) once it holds ``count``;
        AssertionError naming ``what(found())`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(items := found()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"waited {timeout}s for {count} request(s); "
                                         f"got {what(items)}")
                self._changed.wait(remaining)
            return items

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
