"""The real transport: http.client for HTTP, wsproto (utils/doctor/websocket.py) for
WebSocket. Every request has its own connection and its own timeout."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time

from utils.doctor import websocket
from utils.doctor.target import Target
from utils.doctor.transport import (
    USER_AGENT,
    Pending,
    ProbeError,
    Reply,
    WebSocket,
    describe,
    probe_error,
    ssl_context,
)

MAX_BODY = 256 * 1024


def _headers(message: http.client.HTTPMessage) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in message.items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


class HttpRequest:
    """A request sent on construction (``Connection: close``), its answer read later,
    in a thread when ``background``: a long-poll on one connection never holds up the
    next request on the client's side."""

    def __init__(self, target: Target, method: str, path: str, headers: dict[str, str] | None,
                 body: bytes | None, timeout: float, background: bool) -> None:
        self.what = f"{method} {target.netloc}{path}"
        self.timeout = timeout
        self.reply: Reply | None = None
        self.error: ProbeError | None = None
        self._thread: threading.Thread | None = None
        self._start = time.monotonic()
        if target.secure:
            self._conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                target.host, target.port, timeout=timeout, context=ssl_context())
        else:
            self._conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        sent = {"Connection": "close", "User-Agent": USER_AGENT, **(headers or {})}
        try:
            self._conn.request(method, path, body=body, headers=sent)
        except (OSError, http.client.HTTPException) as exc:
            self._fail(exc)
            return
        if background:
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        else:
            self._read()

    def _read(self) -> None:
        try:
            response = self._conn.getresponse()
            data = response.read(MAX_BODY)
            self.reply = Reply(response.status, response.reason, _headers(response.msg), data,
                               time.monotonic() - self._start)
        except (OSError, http.client.HTTPException) as exc:
            self._fail(exc)
        finally:
            self._conn.close()

    def _fail(self, exc: BaseException) -> None:
        self._conn.close()
        self.error = probe_error(exc, self.what, self.timeout)

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def result(self) -> Reply:
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


class Network:
    """The real transport."""

    def request(self, target: Target, method: str, path: str,
                headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 5.0) -> Reply:
        return HttpRequest(target, method, path, headers, body, timeout,
                           background=False).result()

    def start_request(self, target: Target, method: str, path: str,
                      headers: dict[str, str] | None = None, timeout: float = 5.0) -> Pending:
        return HttpRequest(target, method, path, headers, None, timeout, background=True)

    def open_websocket(self, target: Target, path: str, headers: dict[str, str],
                       timeout: float) -> WebSocket:
        return websocket.connect(target, path, headers, timeout)

    def tcp_accepts(self, target: Target, timeout: float) -> bool:
        try:
            with socket.create_connection((target.host, target.port), timeout):
                return True
        except OSError:
            return False

    def certificate_expiry(self, target: Target, timeout: float) -> float | None:
        try:
            with socket.create_connection((target.host, target.port), timeout) as raw, \
                    ssl_context().wrap_socket(raw, server_hostname=target.host) as tls:
                cert = tls.getpeercert() or {}
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(describe(exc)) from None
        return ssl.cert_time_to_seconds(cert["notAfter"]) if "notAfter" in cert else None
