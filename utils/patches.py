"""Every change this service makes to a library's behaviour, in one place.

Each function names the upstream behaviour it replaces and the version it was
written against (requirements.txt pins them). Nothing here edits a library's
files; each patch wraps a method on one object, or replaces one entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from utils.admission import CONNECT, DISCONNECT, Admission, AdmissionSweeper, event_problem
from utils.admission import message_problem as _message_problem

log = logging.getLogger(__name__)

NAMESPACE = "/"
# eventlet keeps each received chunk of a message in a list; a message this many
# chunks long is refused whatever its size (zero-length fragments cost memory too).
MAX_MESSAGE_CHUNKS = 1024


# ------------------------------------------------------------ python-socketio 5.18.1

def close_session(server: Any, eio_sid: str) -> None:
    """End an Engine.IO session now, whatever its transport.

    Upstream ``engineio.Server.disconnect(sid)`` closes with ``wait=True``, which
    waits for the outgoing queue to drain: for a polling client that never polls
    again, that wait never ends (python-engineio#60). This closes without waiting."""
    eio = server.eio
    socket = eio.sockets.get(eio_sid)
    if socket is None:
        return
    socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
    eio.sockets.pop(eio_sid, None)


def close_connection(server: Any, sid: str) -> None:
    """End the Engine.IO session under a Socket.IO connection (``sid`` on "/"), not
    only the namespace, so the client cannot CONNECT again on the same session."""
    eio_sid = server.manager.eio_sid_from_sid(sid, NAMESPACE)
    if eio_sid is not None and eio_sid in server.eio.sockets:
        close_session(server, eio_sid)
    else:  # no Engine.IO session here: Flask-SocketIO's test client
        server.disconnect(sid, namespace=NAMESPACE)


def guard_socketio_server(server: Any, admission: Admission,
                          address_of: Callable[[dict[str, Any]], str]) -> AdmissionSweeper:
    """Put utils/admission.py's rules in front of python-socketio's packet handling.

    Upstream, ``socketio.Server.__init__`` registers ``_handle_eio_connect``,
    ``_handle_eio_message`` and ``_handle_eio_disconnect`` with Engine.IO, and the
    message handler dispatches every packet any session sends: events before a
    CONNECT are dropped with a log line, binary packets are buffered until all their
    announced attachments arrive, a packet that does not decode raises with a
    traceback, and ``_handle_event`` runs a client event named "connect" or
    "disconnect" with the server's own handlers. A session whose namespace the
    server disconnects (``Server.disconnect``) stays open with no deadline. Here
    the instance's methods are
    wrapped (Flask-SocketIO's test client calls them directly) and registered with
    Engine.IO again; a session that breaks the rules is closed."""
    on_eio_connect = server._handle_eio_connect
    on_eio_message = server._handle_eio_message
    on_eio_disconnect = server._handle_eio_disconnect
    on_event = server._handle_event
    server_disconnect = server.disconnect
    manager = server.manager

    def signed_in(eio_sid: str) -> bool:
        return manager.sid_from_eio_sid(eio_sid, NAMESPACE) is not None

    def end(eio_sid: str, why: str) -> None:
        log.warning("closed an Engine.IO session: %s", why)
        close_session(server, eio_sid)

    sweeper = AdmissionSweeper(admission, lambda eio_sid: end(eio_sid, "no CONNECT in time"),
                               signed_in, server.start_background_task, server.sleep)

    def handle_eio_connect(eio_sid: str, environ: dict[str, Any]) -> Any:
        admission.opened(eio_sid, address_of(environ))
        sweeper.ensure_started()
        return on_eio_connect(eio_sid, environ)

    def handle_eio_message(eio_sid: str, data: Any) -> None:
        was_signed_in = signed_in(eio_sid)
        problem = _message_problem(data, was_signed_in)
        if problem:
            end(eio_sid, problem)
            return
        try:
            on_eio_message(eio_sid, data)
        except Exception as exc:  # a packet that does not decode
            end(eio_sid, f"a malformed packet ({type(exc).__name__})")
            return
        kind = data[:1]
        if kind == CONNECT and signed_in(eio_sid):
            admission.settled(eio_sid)
        elif kind == DISCONNECT and was_signed_in:
            signed_out(eio_sid)

    def signed_out(eio_sid: str) -> None:
        """A session left "/" but stays open: it must sign in again in time."""
        if eio_sid in server.eio.sockets and not signed_in(eio_sid):
            admission.opened(eio_sid, address_of(server.environ.get(eio_sid) or {}))

    def disconnect(sid: str, namespace: str | None = None, ignore_queue: bool = False) -> None:
        eio_sid = manager.eio_sid_from_sid(sid, namespace or NAMESPACE)
        server_disconnect(sid, namespace=namespace, ignore_queue=ignore_queue)
        if eio_sid is not None:
            signed_out(eio_sid)

    def handle_eio_disconnect(eio_sid: str, *reason: Any) -> None:
        admission.settled(eio_sid)
        on_eio_disconnect(eio_sid, *reason)

    def handle_event(eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        problem = event_problem(data)
        if problem:
            end(eio_sid, problem)
            return
        on_event(eio_sid, namespace, id, data)

    server._handle_eio_connect = handle_eio_connect
    server._handle_eio_message = handle_eio_message
    server._handle_eio_disconnect = handle_eio_disconnect
    server._handle_event = handle_event
    server.disconnect = disconnect
    server.eio.on("connect", handle_eio_connect)
    server.eio.on("message", handle_eio_message)
    server.eio.on("disconnect", handle_eio_disconnect)
    return sweeper


# ------------------------------------------------------------ python-engineio 4.15.1

def bound_websocket_messages(eio: Any) -> None:
    """Cap the total size of a WebSocket message on every worker.

    Upstream, python-engineio's eventlet driver passes ``max_http_buffer_size`` to
    eventlet as a per-frame limit only, and its gevent and threading drivers build
    simple-websocket servers with no ``max_message_size`` at all: one 2 MB frame, or
    an endless fragmented message, is accepted. simple-websocket counts a message's
    fragments together, so passing the limit bounds both; eventlet is patched below."""
    from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI

    websocket_class = eio._async["websocket"]
    if not issubclass(websocket_class, SimpleWebSocketWSGI):
        return
    limit = int(eio.max_http_buffer_size)

    class BoundedWebSocket(websocket_class):
        def __init__(self, handler: Callable, server: Any) -> None:
            super().__init__(handler, server)
            self.server_args["max_message_size"] = limit

    eio._async = {**eio._async, "websocket": BoundedWebSocket}


# ------------------------------------------------------------ eventlet 0.41.3

_eventlet_patched = False


def patch_eventlet_websocket() -> None:
    """Two changes to eventlet's RFC 6455 reader, once per process.

    - Upstream ``RFC6455WebSocket._recv_frame`` checks each frame against
      ``max_frame_length`` but lets a fragmented message grow without bound. Here a
      message whose chunks together pass the limit fails with close code 1009.
    - Upstream ``_apply_mask`` unmasks one byte at a time in a generator, about
      20 ms of one core per 64 KB, without yielding. Here it is one XOR of two
      integers, which gives the same bytes."""
    global _eventlet_patched
    if _eventlet_patched:
        return
    from eventlet import websocket

    reader = websocket.RFC6455WebSocket
    recv_frame = reader._recv_frame

    def bounded_recv_frame(self: Any, message: Any = None) -> Any:
        received = recv_frame(self, message=message)
        if not received.opcode & 8:  # data frames; control frames stand alone
            chunks = received.data
            if len(chunks) > MAX_MESSAGE_CHUNKS or \
                    sum(map(len, chunks)) > self.max_frame_length:
                raise websocket.FailedConnectionError(1009, "Message is too big")
        return received

    reader._recv_frame = bounded_recv_frame
    reader._apply_mask = staticmethod(unmask)
    _eventlet_patched = True


def unmask(data: bytes, mask: Any, length: int | None = None, offset: int = 0) -> bytes:
    """RFC 6455 §5.3: XOR ``data[:length]`` with the 4-byte ``mask``, starting at
    byte ``offset`` of the mask's cycle."""
    if length is None:
        length = len(data)
    if not length:
        return b""
    key = bytes(mask[(offset + i) % 4] for i in range(4))
    stream = (key * (length // 4 + 1))[:length]
    mixed = int.from_bytes(data[:length], "little") ^ int.from_bytes(stream, "little")
    return mixed.to_bytes(length, "little")
