"""python-socketio 5.18.1: importing it without its optional back-ends, ending a
session at once, and admission's rules in front of its packet handling."""

from __future__ import annotations

import importlib.abc
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from socket import SHUT_RDWR
from typing import Any, NamedTuple, Protocol

log = logging.getLogger(__name__)



NAMESPACE = "/"


CONNECT, DISCONNECT = "0", "1"  # Socket.IO packet types: a message's first character


# Optional back-ends python-socketio probes for at import time.
SOCKETIO_OPTIONAL = ("redis", "valkey", "aioredis")


class _Hide(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is deferred", name=fullname)
        return None


@contextmanager
def without_modules(names: tuple[str, ...], active: bool = True) -> Iterator[None]:
    """Within the block, importing any of ``names`` (not yet imported) fails.

    Upstream, python-socketio's package ``__init__`` imports every client manager,
    and its Redis managers run ``import redis`` at module level whenever redis is
    installed. redis is a pinned dependency here (for REDIS_URL deployments), so a
    single-process server would import it (about 0.1 s and several MB) without
    using it. utils/extensions.py imports python-socketio inside this block when
    REDIS_URL is unset; ``RedisQueuePatches`` (utils/realtime/queue.py) imports redis
    itself when it is set."""
    if not active:
        yield
        return
    finder = _Hide(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def close_session(server: Any, eio_sid: str, abrupt: bool = False) -> None:
    """End an Engine.IO session now, whatever its transport.

    Upstream ``engineio.Server.disconnect(sid)`` closes with ``wait=True``, which
    waits for the outgoing queue to drain: for a polling client that never polls
    again, that wait never ends (python-engineio#60). This closes without waiting;
    ``abrupt`` also shuts a WebSocket's connection down at once, dropping what was
    still queued for it (for protocol violations)."""
    eio = server.eio
    session = eio.sockets.get(eio_sid)
    if session is None:
        return
    environ = server.environ.get(eio_sid)  # python-socketio drops it on close
    session.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
    eio.sockets.pop(eio_sid, None)
    if abrupt:
        _shut_own_websocket(environ)


def _shut_own_websocket(environ: dict[str, Any] | None) -> None:
    """A session opened straight over WebSocket owns its TCP connection: shut it down
    and close it, so a peer busy sending learns at once. Upstream, simple-websocket
    (gevent) keeps the connection open until its reader thread notices the close, and
    a reader throttled by its read budget notices late. A shutdown alone is not
    enough: it sends a FIN, but a peer blocked writing into a full receive window
    never reads it; closing with unread data sends a reset, which fails its write.
    (The worker's own close of the same socket object afterwards does nothing.) A
    polling session's connection may be a proxy's, shared with other clients, and
    is left alone."""
    if not environ or "transport=websocket" not in str(environ.get("QUERY_STRING", "")):
        return
    if str(environ.get("HTTP_UPGRADE", "")).lower() != "websocket":
        return
    connection = environ.get("gunicorn.socket")
    if connection is not None:
        try:
            connection.shutdown(SHUT_RDWR)
        except OSError:
            pass
        connection.close()


def close_connection(server: Any, sid: str) -> None:
    """End the Engine.IO session under a Socket.IO connection (``sid`` on "/"), not
    only the namespace, so the client cannot CONNECT again on the same session."""
    eio_sid = server.manager.eio_sid_from_sid(sid, NAMESPACE)
    if eio_sid is not None and eio_sid in server.eio.sockets:
        close_session(server, eio_sid)
    else:  # no Engine.IO session here: Flask-SocketIO's test client
        server.disconnect(sid, namespace=NAMESPACE)


class SessionRules(Protocol):
    """What a session may send, and when (utils/realtime/admission.py's ``Rules``)."""

    def message_problem(self, data: object, signed_in: bool) -> str | None: ...
    def event_problem(self, data: object) -> str | None: ...
    def connected(self, eio_sid: str, environ: dict[str, Any]) -> None: ...
    def opened(self, eio_sid: str, environ: dict[str, Any]) -> None: ...
    def settled(self, eio_sid: str) -> None: ...


class Sessions(NamedTuple):
    """What the guard gives back: whether a session signed in, and ending one."""

    signed_in: Callable[[str], bool]
    end: Callable[[str, str], None]


def guard_socketio_server(server: Any, rules: SessionRules) -> Sessions:
    """Put utils/realtime/admission.py's rules in front of python-socketio's packet handling.

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
        close_session(server, eio_sid, abrupt=True)

    def handle_eio_connect(eio_sid: str, environ: dict[str, Any]) -> Any:
        rules.connected(eio_sid, environ)
        return on_eio_connect(eio_sid, environ)

    def handle_eio_message(eio_sid: str, data: Any) -> None:
        was_signed_in = signed_in(eio_sid)
        problem = rules.message_problem(data, was_signed_in)
        if problem:
            end(eio_sid, problem)
            return
        try:
            on_eio_message(eio_sid, data)
        except ValueError as exc:  # a packet that does not decode, or an unknown type
            end(eio_sid, f"a malformed packet ({type(exc).__name__})")
            return
        kind = data[:1]
        if kind == CONNECT and signed_in(eio_sid):
            rules.settled(eio_sid)
        elif kind == DISCONNECT and was_signed_in:
            signed_out(eio_sid)

    def signed_out(eio_sid: str) -> None:
        """A session left "/" but stays open: it must sign in again in time."""
        if eio_sid in server.eio.sockets and not signed_in(eio_sid):
            rules.opened(eio_sid, server.environ.get(eio_sid) or {})

    def disconnect(sid: str, namespace: str | None = None, ignore_queue: bool = False) -> None:
        eio_sid = manager.eio_sid_from_sid(sid, namespace or NAMESPACE)
        server_disconnect(sid, namespace=namespace, ignore_queue=ignore_queue)
        if eio_sid is not None:
            signed_out(eio_sid)

    def handle_eio_disconnect(eio_sid: str, *reason: Any) -> None:
        rules.settled(eio_sid)
        on_eio_disconnect(eio_sid, *reason)

    def handle_event(eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        problem = rules.event_problem(data)
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
    return Sessions(signed_in, end)
