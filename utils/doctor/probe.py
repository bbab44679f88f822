"""A minimal Engine.IO 4 / Socket.IO 5 client over a Transport, for the checks.

It speaks just enough of the protocols to see a deployment the way a browser
does: a long-polling session (``Polling``), Engine.IO over a WebSocket
(``WsEngine``), and the Socket.IO CONNECT and events on top of either.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from utils.doctor import packets
from utils.doctor.target import Target
from utils.doctor.transport import (
    Pending,
    ProbeError,
    ProbeTimeout,
    Reply,
    Transport,
    TransportClosed,
    WebSocket,
)

BAD_REQUEST = 400
INVALID_SESSION = "Invalid session"  # python-engineio's answer to a sid it does not hold
CLOSE_WAIT = 2.0  # seconds a courtesy close may take, at most
WELCOME_WAIT = 2.0  # seconds to wait for auth_success after the CONNECT answer


class InvalidSession(ProbeError):
    """A request with a sid was answered 400 Invalid session: the process that
    answered does not hold the session."""


class Channel(Protocol):
    """Engine.IO packets in and out, over polling or a WebSocket."""

    def send(self, packet: str) -> None: ...

    def recv(self, deadline: float) -> str: ...


def polling_query(sid: str | None = None) -> str:
    params = {"EIO": "4", "transport": "polling",
              "t": base64.urlsafe_b64encode(os.urandom(6)).decode()}
    if sid:
        params["sid"] = sid
    return "?" + urlencode(params)


def websocket_query(sid: str | None = None) -> str:
    params = {"EIO": "4", "transport": "websocket"}
    if sid:
        params["sid"] = sid
    return "?" + urlencode(params)


def cookie_pair(set_cookie: str) -> str:
    """``name=value`` of the first cookie a Set-Cookie header sets, or ""."""
    return set_cookie.split(";", 1)[0].strip() if "=" in set_cookie else ""


def refusal(reply: Reply, what: str) -> ProbeError:
    """The error for a non-200 answer to a request of the session."""
    text = reply.text()[:80].strip()
    if reply.status == BAD_REQUEST and INVALID_SESSION in text:
        return InvalidSession(f"{what} answered {reply.status} {text}")
    return ProbeError(f"{what} answered {reply.status} {text}")


class Polling:
    """One Engine.IO session over long-polling, run the way socket.io-client runs it.

    ``send_cookie``: send back the cookie the handshake set, as a browser does with
    withCredentials (sticky proxies route on it)."""

    def __init__(self, transport: Transport, target: Target, timeout: float,
                 origin: str | None = None, headers: dict[str, str] | None = None,
                 send_cookie: bool = True) -> None:
        self.transport, self.target, self.timeout = transport, target, timeout
        self.origin, self.extra, self.send_cookie = origin, headers or {}, send_cookie
        self.handshake: Reply | None = None
        self.info: dict[str, Any] = {}
        self.sid: str | None = None
        self.cookie = ""
        self.pending: list[str] = []

    def headers(self, more: dict[str, str] | None = None) -> dict[str, str]:
        """What every request of the session carries (the upgrade request too)."""
        headers = {"Accept": "*/*", **self.extra, **(more or {})}
        if self.origin:
            headers["Origin"] = self.origin
        if self.cookie and self.send_cookie:
            headers["Cookie"] = self.cookie
        return headers

    def open(self) -> dict[str, Any]:
        """The handshake; raises ProbeError (``handshake`` kept) when refused."""
        reply = self.transport.request(self.target, "GET", self.target.eio_path +
                                       polling_query(), self.headers(), timeout=self.timeout)
        self.handshake = reply
        if reply.status != 200:
            raise ProbeError(f"handshake answered {reply.status} {reply.text()[:80].strip()}")
        received = packets.split_payload(reply.text())
        info = packets.open_info(received[0]) if received else None
        if info is None:
            raise ProbeError(f"handshake body {reply.text()[:60]!r} is not an Engine.IO 4 "
                             "open packet with a sid")
        self.info, self.sid, self.pending = info, str(info["sid"]), received[1:]
        self.cookie = cookie_pair(reply.header("set-cookie"))
        return info

    def _path(self) -> str:
        return self.target.eio_path + polling_query(self.sid)

    def send(self, packet: str, timeout: float | None = None) -> None:
        reply = self.transport.request(
            self.target, "POST", self._path(),
            self.headers({"Content-Type": "text/plain;charset=UTF-8"}), packet.encode(),
            timeout=timeout or self.timeout)
        if reply.status != 200:
            raise refusal(reply, "POST")

    def start_poll(self, timeout: float) -> Pending:
        """A long-poll GET, sent before this returns; its answer is awaited in the background."""
        return self.transport.start_request(self.target, "GET", self._path(), self.headers(),
                                            timeout=timeout)

    def poll(self, timeout: float) -> list[str]:
        """One long-poll GET; answers pings, drops noops."""
        reply = self.transport.request(self.target, "GET", self._path(), self.headers(),
                                       timeout=timeout)
        if reply.status != 200:
            raise refusal(reply, "long-poll")
        received = []
        for packet in packets.split_payload(reply.text()):
            if packet == packets.PING:
                self.send(packets.PONG)
            elif packet == packets.CLOSE:
                raise TransportClosed("the server closed the session")
            elif packet != packets.NOOP:
                received.append(packet)
        return received

    def recv(self, deadline: float) -> str:
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProbeTimeout("nothing arrived over polling in time")
            self.pending.extend(self.poll(remaining))
        return self.pending.pop(0)

    def close(self) -> None:
        """A courtesy CLOSE that never waits long; failures are ignored."""
        if self.sid:
            try:
                self.send(packets.CLOSE, timeout=min(self.timeout, CLOSE_WAIT))
            except ProbeError:
                pass


class WsEngine:
    """Engine.IO over a WebSocket, opened directly or upgraded from polling."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    def send(self, packet: str) -> None:
        self.ws.send_text(packet)

    def recv(self, deadline: float) -> str:
        while True:
            packet = self.ws.recv_text(deadline)
            if packet == packets.PING:
                self.send(packets.PONG)
            elif packet == packets.CLOSE:
                raise TransportClosed("the server closed the session")
            elif packet != packets.NOOP:
                return packet


def open_websocket_session(transport: Transport, target: Target, timeout: float,
                           headers: dict[str, str]) -> tuple[WebSocket, WsEngine, dict[str, Any]]:
    """A new Engine.IO session over a WebSocket opened directly, as clients of a
    WebSocket-only server open it: the socket, its engine and its open packet's data.
    Raises WsRefused or ProbeError (the socket closed)."""
    ws = transport.open_websocket(target, target.eio_path + websocket_query(), headers, timeout)
    try:
        engine = WsEngine(ws)
        opened = engine.recv(time.monotonic() + timeout)
        info = packets.open_info(opened)
        if info is None:
            raise ProbeError(f"first message {opened[:40]!r} is not an Engine.IO open packet")
    except BaseException:
        ws.close()
        raise
    return ws, engine, info


def session_sid(reply: Reply) -> str | None:
    """The sid of a polling handshake's answer, or None when it is not one."""
    if reply.status != 200:
        return None
    received = packets.split_payload(reply.text())
    info = packets.open_info(received[0]) if received else None
    return str(info["sid"]) if info else None


@dataclass(frozen=True)
class Connect:
    """The outcome of a Socket.IO CONNECT to namespace "/"."""

    accepted: bool
    elapsed: float
    code: str | None = None
    message: str | None = None
    welcome: dict[str, Any] | None = None  # the contract's auth_success data


def sio_connect(channel: Channel, auth: dict[str, Any] | None, timeout: float,
                welcome_wait: float = WELCOME_WAIT) -> Connect:
    """CONNECT, then wait briefly for the contract's ``auth_success``."""
    start = time.monotonic()
    deadline = start + timeout
    channel.send(packets.connect(auth))
    welcome = None
    while True:
        packet = channel.recv(deadline)
        refused = packets.connect_error(packet)
        if refused is not None:
            return Connect(False, time.monotonic() - start, *refused)
        if packet.startswith(packets.SIO_CONNECT):
            break
        # python-socketio sends what the connect handler emits before the CONNECT answer.
        welcome = _welcome(packet) or welcome
    elapsed = time.monotonic() - start
    if welcome is None:
        try:
            welcome = wait_event(channel, "auth_success",
                                 min(deadline, time.monotonic() + welcome_wait))
        except ProbeTimeout:
            pass
    return Connect(True, elapsed, welcome=welcome)


def _welcome(packet: str) -> dict[str, Any] | None:
    found = packets.event_of(packet)
    if found and found[0] == "auth_success" and isinstance(found[1], dict):
        return found[1]
    return None


def wait_event(channel: Channel, name: str, deadline: float,
               match: Any = None) -> dict[str, Any]:
    """The first argument of the next ``name`` event (that ``match`` accepts)."""
    while True:
        found = packets.event_of(channel.recv(deadline))
        if found and found[0] == name and (match is None or match(found[1])):
            return found[1] if isinstance(found[1], dict) else {"value": found[1]}
