"""The doctor's WebSocket client (utils/doctor/websocket.py, framing by wsproto)
against one-connection servers on loopback: a refusal kept as evidence, and the
offer, compression, fragments, pings and close of an accepted WebSocket."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from utils.doctor.target import Target
from utils.doctor.transport import Background, TransportClosed, WsRefused
from utils.doctor.websocket import connect

PATH = "/socket.io/?EIO=4&transport=websocket"
TIMEOUT = 3.0
NGINX_REFUSAL = (b'HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\n'
                 b'Content-Type: text/plain\r\nContent-Length: 27\r\n\r\n'
                 b'"Invalid websocket upgrade"')
OPEN_PACKET = '0{"sid":"abc","upgrades":[],"pingTimeout":60000,"pingInterval":25000}'


class OneConnection:
    """A loopback listener whose ``serve`` handles the first connection in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.target = Target("http", "127.0.0.1", self.listener.getsockname()[1])
        self.seen: list[Event] = []
        self._serve = serve
        self.thread = Background(self._run)  # its error is shown by the test that joins

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                self._serve(conn)
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        assert self.thread.error is None, self.thread.error


def events_until(conn: socket.socket, ws: WSConnection, kind: type) -> list[Event]:
    """Events read from ``conn`` until one of ``kind`` arrives."""
    seen: list[Event] = []
    deadline = time.monotonic() + TIMEOUT
    while not any(isinstance(e, kind) for e in seen):
        assert time.monotonic() < deadline, seen
        ws.receive_data(conn.recv(65536))
        seen += list(ws.events())
    return seen


def test_a_refusal_is_kept_with_its_status_server_and_body():
    server = OneConnection(lambda conn: (conn.recv(65536), conn.sendall(NGINX_REFUSAL)))
    with pytest.raises(WsRefused) as refused:
        connect(server.target, PATH, {"Origin": "http://localhost:3000"}, TIMEOUT)
    server.join()
    reply = refused.value.reply
    assert (reply.status, reply.reason) == (400, "Bad Request")
    assert reply.server_name() == "nginx/1.22.1"
    assert reply.text() == '"Invalid websocket upgrade"'


def test_an_accepted_websocket_inflates_fragments_answers_pings_and_sees_the_close():
    offered: list[list[str]] = []
    received: list[Event] = []

    def serve(conn: socket.socket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        request = next(e for e in events_until(conn, ws, Request) if isinstance(e, Request))
        offered.append(list(request.extensions))
        conn.sendall(ws.send(AcceptConnection(extensions=[PerMessageDeflate()])))
        conn.sendall(ws.send(Ping(b"are you there")))
        conn.sendall(ws.send(TextMessage(OPEN_PACKET[:20], message_finished=False)))
        conn.sendall(ws.send(TextMessage(OPEN_PACKET[20:], message_finished=True)))
        received.extend(events_until(conn, ws, Message))
        conn.sendall(ws.send(CloseConnection(code=1000)))

    server = OneConnection(serve)
    ws = connect(server.target, PATH, {}, TIMEOUT)
    try:
        assert ws.reply.status == 101
        assert ws.extensions.startswith("permessage-deflate")
        assert ws.recv_text(time.monotonic() + TIMEOUT) == OPEN_PACKET
        ws.send_text("40")
        with pytest.raises(TransportClosed, match="code 1000"):
            ws.recv_text(time.monotonic() + TIMEOUT)
    finally:
        ws.close()
    server.join()
    assert offered == [["permessage-deflate; client_max_window_bits"]]  # as Chrome words it
    assert any(isinstance(e, Pong) and e.payload == b"are you there" for e in received)
    assert any(isinstance(e, TextMessage) and e.data == "40" for e in received)
