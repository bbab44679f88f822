"""The network as the checks see it: HTTP requests, long-polls held open, WebSockets.

Checks never open a socket themselves; they call a ``Transport``. The real one is
utils/doctor/network.py; tests pass a fake that answers with replies recorded from
a real server.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from utils.doctor.target import Target

USER_AGENT = "notification-doctor/1"


class ProbeError(Exception):
    """A network step that did not complete; the message is evidence for a report."""


class ProbeTimeout(ProbeError):
    """No answer before the deadline."""


class CertificateProblem(ProbeError):
    """The TLS certificate did not verify."""


class TransportClosed(ProbeError):
    """The server closed the Engine.IO session or the WebSocket."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer; header names are lower-case, repeated headers joined by ", "."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def server_name(self) -> str:
        """What answered, as the response names it (a proxy usually names itself)."""
        return ", ".join(v for v in (self.header("server"), self.header("via")) if v)


class WsRefused(ProbeError):
    """The server answered a WebSocket request with something other than 101."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"answered {reply.status} {reply.reason} instead of 101")
        self.reply = reply


class Pending(Protocol):
    """A request on its way; its answer is read later."""

    def join(self, timeout: float) -> bool:
        """True when the answer (or a failure) arrived within ``timeout``."""

    def result(self) -> Reply:
        """The answer, or the ProbeError that replaced it."""


class Background:
    """A daemon thread for a read that must stay pending while others run (the round-trip
    check's poll; a fake transport's pending requests)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self._fn = fn
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # reported by whoever joins, never raised here
            self.error = exc

    def join(self, timeout: float | None) -> bool:
        """True when it finished (answered or failed) within ``timeout`` (None: waits)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


class WebSocket(Protocol):
    """An open WebSocket: text messages in and out."""

    reply: Reply  # the 101 answer
    extensions: str  # the negotiated Sec-WebSocket-Extensions; "" when none

    def send_text(self, text: str) -> None: ...

    def recv_text(self, deadline: float) -> str:
        """The next whole text message; raises ProbeTimeout or TransportClosed."""

    def close(self) -> None: ...


class Transport(Protocol):
    def request(self, target: Target, method: str, path: str,
                headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 5.0) -> Reply:
        """One request on its own connection."""

    def start_request(self, target: Target, method: str, path: str,
                      headers: dict[str, str] | None = None, timeout: float = 5.0) -> Pending:
        """A request surely sent before this returns, its answer awaited in the background."""

    def open_websocket(self, target: Target, path: str, headers: dict[str, str],
                       timeout: float) -> WebSocket:
        """A WebSocket offering permessage-deflate as browsers do; raises WsRefused."""

    def tcp_accepts(self, target: Target, timeout: float) -> bool: ...

    def certificate_expiry(self, target: Target, timeout: float) -> float | None:
        """The server certificate's notAfter as epoch seconds; raises ProbeError."""


def ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    return str(exc) or type(exc).__name__


def probe_error(exc: BaseException, what: str, timeout: float) -> ProbeError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateProblem(exc.verify_message or str(exc))
    if isinstance(exc, TimeoutError):
        return ProbeTimeout(f"{what}: no answer within {timeout:g} s")
    return ProbeError(f"{what}: {describe(exc)}")
