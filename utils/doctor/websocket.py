"""A WebSocket client over a plain socket, its framing done by wsproto.

It offers permessage-deflate exactly as Chrome and Safari offer it, so a server
that accepts the offer is caught, and keeps the answer to the upgrade request
(status, headers, body) as evidence when it is not 101.
"""

from __future__ import annotations

import http
import socket
import ssl
import time

from wsproto import ConnectionState, WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import ProtocolError

from utils.doctor.target import Target
from utils.doctor.transport import (
    USER_AGENT,
    CertificateProblem,
    ProbeError,
    ProbeTimeout,
    Reply,
    TransportClosed,
    WsRefused,
    describe,
    ssl_context,
)

READ_SIZE = 65536
MAX_REFUSAL_BODY = 4096
REFUSAL_BODY_WAIT = 1.0  # seconds to read the body of a refusal after its head
NORMAL_CLOSURE = 1000


class BrowserDeflate(PerMessageDeflate):
    """permessage-deflate offered the way Chrome and Safari word it; remembers what
    the server answered."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted = ""

    def offer(self) -> str:
        return "client_max_window_bits"

    def finalize(self, offer: str) -> None:
        super().finalize(offer)
        self.accepted = offer


class WsConnection:
    """An open WebSocket: ``reply`` is the 101, ``extensions`` what was negotiated."""

    def __init__(self, sock: socket.socket, protocol: WSConnection, reply: Reply,
                 extensions: str) -> None:
        self.sock: socket.socket | None = sock
        self.protocol, self.reply, self.extensions = protocol, reply, extensions
        self._parts: list[str] = []

    def send_text(self, text: str) -> None:
        self._send(TextMessage(data=text))

    def recv_text(self, deadline: float) -> str:
        """The next whole text message; answers pings, raises on close."""
        while True:
            for event in self.protocol.events():
                message = self._handle(event)
                if message is not None:
                    return message
            self._feed(_recv(self._socket(), deadline, "over the WebSocket"))

    def _handle(self, event: Event) -> str | None:
        if isinstance(event, Ping):
            self._send(event.response())
        elif isinstance(event, CloseConnection):
            raise TransportClosed(f"the server closed the WebSocket (code {event.code})")
        elif isinstance(event, TextMessage):
            self._parts.append(event.data)
            if event.message_finished:
                message, self._parts = "".join(self._parts), []
                return message
        return None

    def _feed(self, data: bytes) -> None:
        try:
            self.protocol.receive_data(data)
        except ProtocolError as exc:
            raise TransportClosed(f"the server broke the WebSocket protocol: {exc}") from None

    def _send(self, event: Event) -> None:
        try:
            self._socket().sendall(self.protocol.send(event))
        except OSError as exc:
            raise TransportClosed(describe(exc)) from None
        except ProtocolError as exc:
            raise TransportClosed(str(exc)) from None

    def _socket(self) -> socket.socket:
        if self.sock is None:
            raise TransportClosed("the WebSocket is closed")
        return self.sock

    def close(self) -> None:
        if self.sock is None:
            return
        if self.protocol.state is ConnectionState.OPEN:
            try:
                self._send(CloseConnection(code=NORMAL_CLOSURE))
            except ProbeError:
                pass
        _close(self.sock)
        self.sock = None


def connect(target: Target, path: str, headers: dict[str, str],
            timeout: float) -> WsConnection:
    """The upgrade request and its answer; raises WsRefused when it is not 101."""
    start = time.monotonic()
    deadline = start + timeout
    sock = _open_socket(target, timeout)
    protocol = WSConnection(ConnectionType.CLIENT)
    deflate = BrowserDeflate()
    request = Request(host=target.netloc, target=path, extensions=[deflate],
                      extra_headers=[("User-Agent", USER_AGENT), *headers.items()])
    try:
        sock.sendall(protocol.send(request))
        answer = _handshake_answer(sock, protocol, timeout, deadline)
    except BaseException:
        _close(sock)
        raise
    if isinstance(answer, RejectConnection):
        body = _refusal_body(sock, protocol, answer)
        _close(sock)
        raise WsRefused(_reply(answer.status_code, answer.headers, body, start))
    reply = _reply(http.HTTPStatus.SWITCHING_PROTOCOLS, answer.extra_headers, b"", start)
    return WsConnection(sock, protocol, reply, deflate.accepted)


def _open_socket(target: Target, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((target.host, target.port), timeout)
        if target.secure:
            sock = ssl_context().wrap_socket(sock, server_hostname=target.host)
    except ssl.SSLCertVerificationError as exc:
        raise CertificateProblem(exc.verify_message or str(exc)) from None
    except TimeoutError:
        raise ProbeTimeout(f"no connection within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeError(describe(exc)) from None
    return sock


def _handshake_answer(sock: socket.socket, protocol: WSConnection, timeout: float,
                      deadline: float) -> AcceptConnection | RejectConnection:
    while True:
        for event in protocol.events():
            if isinstance(event, AcceptConnection | RejectConnection):
                return event
        try:
            data = _recv(sock, deadline, "to the WebSocket request")
        except ProbeTimeout:
            raise ProbeTimeout(f"no answer to the WebSocket request within "
                               f"{timeout:g} s") from None
        except TransportClosed:
            raise ProbeError("the connection closed without an HTTP answer") from None
        try:
            protocol.receive_data(data)
        except ProtocolError as exc:
            raise ProbeError(f"101 refused by the client: {exc}") from None


def _refusal_body(sock: socket.socket, protocol: WSConnection,
                  answer: RejectConnection) -> bytes:
    """As much of a refusal's body as arrives promptly, up to MAX_REFUSAL_BODY."""
    body = b""
    if not answer.has_body:
        return body
    deadline = time.monotonic() + REFUSAL_BODY_WAIT
    try:
        while len(body) < MAX_REFUSAL_BODY:
            for event in protocol.events():
                if isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        return body[:MAX_REFUSAL_BODY]
            protocol.receive_data(_recv(sock, deadline, "in the refusal's body"))
    except (ProbeError, ProtocolError):
        pass
    return body[:MAX_REFUSAL_BODY]


def _recv(sock: socket.socket, deadline: float, where: str) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ProbeTimeout(f"nothing arrived {where} in time")
    sock.settimeout(remaining)
    try:
        data = sock.recv(READ_SIZE)
    except TimeoutError:
        raise ProbeTimeout(f"nothing arrived {where} in time") from None
    except OSError as exc:
        raise TransportClosed(describe(exc)) from None
    if not data:
        raise TransportClosed("the server closed the connection")
    return data


def _reply(status: int, headers: list[tuple[bytes, bytes]], body: bytes,
           start: float) -> Reply:
    merged: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return Reply(status, _reason(status), merged, body, time.monotonic() - start)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
