"""Every change this service makes to a library's internals, in one place.

Each patch names the upstream behaviour it replaces. They were written against the
versions in ``PATCHED_FOR``; ``check_versions`` refuses to start with others, naming
the package, because a private method that moved or changed would break a patch
silently. Nothing here edits a library's files: each patch wraps a method on one
object, replaces one attribute, or overrides private methods in a subclass mixin.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from socket import SHUT_RDWR
from typing import Any

from utils.realtime.admission import (
    CONNECT,
    DISCONNECT,
    Admission,
    AdmissionSweeper,
    event_problem,
    message_problem,
)

log = logging.getLogger(__name__)

PATCHED_FOR = {"python-engineio": "4.15.1", "python-socketio": "5.18.1", "eventlet": "0.41.3",
               "limits": "5.8.0"}
NAMESPACE = "/"
# eventlet keeps each received chunk of a message in a list; a message this many
# chunks long is refused whatever its size (zero-length fragments cost memory too).
MAX_MESSAGE_CHUNKS = 1024


class PatchedVersionError(RuntimeError):
    """An installed library is not the version the patches here were written for."""


def check_versions(installed: Callable[[str], str] = metadata.version) -> None:
    """Raise PatchedVersionError naming each package whose version differs."""
    wrong = []
    for package, expected in PATCHED_FOR.items():
        try:
            found = installed(package)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != expected:
            wrong.append(f"{package} {found} (patched for {expected})")
    if wrong:
        raise PatchedVersionError(
            "utils/patches.py was written for other library versions: " + ", ".join(wrong)
            + "; install requirements.txt, or review each patch against the new version")


# ------------------------------------------------------------ importing python-socketio

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
    REDIS_URL is unset; ``RedisQueuePatches`` imports redis itself when it is set."""
    if not active:
        yield
        return
    finder = _Hide(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


# ------------------------------------------------------------ python-socketio 5.18.1

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


def guard_socketio_server(server: Any, admission: Admission,
                          address_of: Callable[[dict[str, Any]], str]) -> AdmissionSweeper:
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

    sweeper = AdmissionSweeper(admission, lambda eio_sid: end(eio_sid, "no CONNECT in time"),
                               signed_in, server.start_background_task, server.sleep)

    def handle_eio_connect(eio_sid: str, environ: dict[str, Any]) -> Any:
        admission.opened(eio_sid, address_of(environ))
        sweeper.ensure_started()
        return on_eio_connect(eio_sid, environ)

    def handle_eio_message(eio_sid: str, data: Any) -> None:
        was_signed_in = signed_in(eio_sid)
        problem = message_problem(data, was_signed_in)
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


# ------------------------------------------------------------ python-socketio's RedisManager

# Bounded connects and TCP keepalive, so a dead Redis is noticed, not waited on.
REDIS_OPTIONS = {"socket_connect_timeout": 5, "socket_keepalive": True}
LISTEN_RETRY_MIN, LISTEN_RETRY_MAX = 0.25, 2.0
NOTIFICATION_EVENT = "notification"


class RedisQueuePatches:
    """Mixed in before ``socketio.RedisManager`` (utils/realtime/replay.py).

    Upstream, Redis pub/sub forgets what it cannot deliver; python-socketio's
    ``PubSubManager.emit`` publishes and its ``_redis_listen_with_retries`` backs off
    up to 60 s after a failure, during which emits from other processes are lost, and
    ``_publish`` logs a publish it gave up on and returns None. A client whose
    ``last_id`` moved past such a gap would never replay it. Here, for
    ``notification`` emits: while the queue is down nothing is delivered live (the
    rows are stored); the listener resubscribes within 0.25-2 s; once subscribed
    again this process ends its sockets' transports, and their clients reconnect
    with ``last_id`` and replay the gap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue_down = False
        self.listening = None  # the listener's pubsub (publishing may replace self.pubsub)
        self.redis_options = {**REDIS_OPTIONS, **self.redis_options}
        self.on_queue_error: Callable[[str], None] = lambda operation: None

    def _get_redis_module(self):
        # Upstream reads the module python-socketio imported; it may have been
        # imported without redis (``without_modules`` above).
        import redis

        return redis

    def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None,
             to=None, **kwargs):
        room = to or room
        if kwargs.get("ignore_queue") or callback is not None or event != NOTIFICATION_EVENT:
            return super().emit(event, data, namespace=namespace, room=room,
                                skip_sid=skip_sid, callback=callback, **kwargs)
        if room in self.rooms.get(namespace or "/", {}).get(None, {}):
            # A socket of this process (a replay's own send): no other process has
            # it, so it goes straight out, Redis or not.
            return super().emit(event, data, namespace=namespace, room=room,
                                skip_sid=skip_sid, ignore_queue=True)
        # The message python-socketio's other processes expect (PubSubManager.emit),
        # published first: local sockets only get what the others can get too.
        message = {"method": "emit", "event": event, "data": [data], "binary": False,
                   "namespace": namespace or "/", "room": room, "skip_sid": skip_sid,
                   "callback": None, "host_id": self.host_id}
        if self._publish(message) is None:
            self._mark_down("publish failed")
        elif not self.queue_down:
            self._handle_emit(message)

    def _mark_down(self, why: str) -> None:
        if not self.queue_down:
            log.error("message queue down (%s): live notifications pause; they are "
                      "stored and replayed when it returns", why)
        self.queue_down = True
        if why == "publish failed" and self.listening is not None:
            # Make the listener resubscribe, which ends the outage with a resync.
            try:
                self.listening.close()
            except Exception:
                pass

    def _redis_listen_with_retries(self):
        delay = LISTEN_RETRY_MIN
        while True:
            try:
                self._redis_connect()
                pubsub = self.listening = self.pubsub
                pubsub.subscribe(self.channel)
                delay = LISTEN_RETRY_MIN
                if self.queue_down:
                    self._recovered()
                yield from pubsub.listen()
            except Exception as exc:
                self._mark_down(type(exc).__name__)
                self.on_queue_error("subscribe")
                self.server.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX)

    def _recovered(self) -> None:
        self.queue_down = False
        count = abort_sessions(self.server.eio, self.server.sleep)
        log.warning("message queue back: closed %d transport(s) so their clients "
                    "reconnect and replay what they missed", count)

    def _publish(self, data):
        result = super()._publish(data)
        if result is None:
            self.on_queue_error("publish")
        return result


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


def route_pings(schedule: Callable[[Any], None]) -> None:
    """Upstream ``engineio.socket.Socket.schedule_ping`` starts a greenthread per
    socket that sleeps ``ping_interval`` and sends one PING; with 10k sockets that is
    10k sleeping greenthreads. Here every socket's ping is handed to ``schedule``
    (utils/realtime/pinger.py), which keeps one task for all of them."""
    import engineio.socket

    engineio.socket.Socket.schedule_ping = lambda sock: schedule(sock)


def abort_sessions(eio: Any, sleep: Callable[[float], None], batch: int = 200,
                   pause: float = 0.02) -> int:
    """End every Engine.IO session of this process without a CLOSE packet, ``batch``
    at a time so the reconnect wave reaches other nodes spread out; returns how many.

    Upstream has no way to end sessions that clients read as a lost connection:
    ``Server.disconnect`` sends CLOSE (socket.io-client then does not reconnect) and
    waits for the queue. Here each session in the private ``eio.sockets`` dict is
    closed with ``abort=True, wait=False`` and taken out of it."""
    sessions = list(eio.sockets.items())
    for done, (sid, session) in enumerate(sessions, 1):
        try:
            session.close(wait=False, abort=True)
        except Exception:
            log.debug("closing session %s failed", sid, exc_info=True)
        eio.sockets.pop(sid, None)
        if done % batch == 0:
            sleep(pause)
    return len(sessions)


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


# ------------------------------------------------------------ limits 5.8.0

# How often an in-memory rate-limit storage drops its expired counters.
MEMORY_LIMITS_EXPIRY_SECONDS = 5.0
_limits_patched = False


def expire_memory_limits_inline() -> None:
    """Upstream ``limits.storage.MemoryStorage`` starts a ``threading.Timer`` (10 ms)
    on every hit when none is alive, and its run copies every key's state. Under
    eventlet that timer is a green thread, ``is_alive()`` is False until it first
    runs, so a burst of hits starts one each; and ``Thread.__init__`` calls
    ``current_thread()``, which registers the calling greenthread (a socket's, for
    a connect) as a thread with a link callback for as long as it lives. With the
    per-address connect limit on, sockets weighed 17 KB more (issue 13). Here no
    timer starts: expired counters are dropped inline, at most once every
    ``MEMORY_LIMITS_EXPIRY_SECONDS`` per storage. Reads never see an expired
    counter either way: ``get`` checks the expiry itself."""
    global _limits_patched
    if _limits_patched:
        return
    from limits.storage.memory import MemoryStorage

    expire = MemoryStorage._MemoryStorage__expire_events  # type: ignore[attr-defined]

    def expire_now_and_then(self: Any) -> None:
        now = time.monotonic()
        if now >= getattr(self, "_next_inline_expiry", 0.0):
            self._next_inline_expiry = now + MEMORY_LIMITS_EXPIRY_SECONDS
            expire(self)

    MemoryStorage._MemoryStorage__schedule_expiry = expire_now_and_then  # type: ignore[attr-defined]
    _limits_patched = True


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


def end_taken_over_connection(environ: dict[str, Any]) -> Iterable[bytes] | None:
    """Tell the server a connection was taken over and must just be closed.

    gunicorn's async workers (eventlet and gevent) close on StopIteration, the signal
    simple-websocket itself uses. eventlet's own server (``python app.py``) reads
    the private flag ``eventlet.wsgi.WSGI_LOCAL.already_handled``. None elsewhere."""
    if "gunicorn.socket" in environ:
        raise StopIteration()
    if "eventlet.input" in environ:
        from eventlet import wsgi

        wsgi.WSGI_LOCAL.already_handled = True
        return []
    return None
