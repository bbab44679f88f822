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
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from socket import SHUT_RDWR
from typing import Any, NamedTuple, Protocol

log = logging.getLogger(__name__)

PATCHED_FOR = {"python-engineio": "4.15.1", "python-socketio": "5.18.1", "eventlet": "0.41.3",
               "flask-socketio": "5.7.0",  # routes/events.py: Events.trigger_event
               "limits": "5.8.0"}
NAMESPACE = "/"
CONNECT, DISCONNECT = "0", "1"  # Socket.IO packet types: a message's first character
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
            "utils/patches/ was written for other library versions: " + ", ".join(wrong)
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


# ------------------------------------------------------------ python-socketio's RedisManager

# Bounded connects and TCP keepalive, so a dead Redis is noticed, not waited on.
REDIS_OPTIONS = {"socket_connect_timeout": 5, "socket_keepalive": True}
LISTEN_RETRY_MIN, LISTEN_RETRY_MAX = 0.25, 2.0
PUBLISH_ATTEMPTS = (0.0, 0.05, 0.25)  # the pause before each attempt
UNSENT_LIMIT = 10_000  # messages kept for publishing again while Redis refuses them
RECENT_LIMIT = 10_000  # ids remembered while the listener is down, and after a catch-up
CAUGHT_UP_TTL = 60.0
NOTIFICATION_EVENT = "notification"


class RedisQueuePatches:
    """Mixed in before ``socketio.RedisManager`` (utils/realtime/replay.py).

    Upstream, ``RedisManager`` keeps one Redis client for publishing and listening:
    the listener's pub/sub connection comes from the publishing client's pool.
    ``_publish`` retries a failed publish after ``_redis_connect()``, which builds a
    new client; the old one is dropped, and redis-py's ``Redis.__del__`` closes its
    pool, connections in use included. So one failed publish closed the listener's
    socket under it (the ValueError of issue 20), and every message published while
    it resubscribed was lost; the listener then backs off up to 60 s, and
    ``_publish`` gives up after a second attempt, logging and returning None.

    Here:
    - publishing and listening have a client each, each built once; redis-py
      replaces a broken connection of its pool by itself;
    - a notification is always delivered to this process's sockets at once; one
      Redis would not take (after ``PUBLISH_ATTEMPTS``) is kept, up to
      ``UNSENT_LIMIT``, and published again in order once Redis takes it;
    - the listener resubscribes within 0.25-2 s and then calls ``on_resubscribed``
      with the moment it went deaf (utils/realtime/catchup.py re-sends what was
      stored since to this process's sockets, without ending any). Ids this
      process delivered itself meanwhile are passed along so they are not sent
      twice, and live emits of ids the catch-up sent are dropped for
      ``CAUGHT_UP_TTL`` (a peer publishing its kept messages late)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis_options = {**REDIS_OPTIONS, **self.redis_options}
        self.on_queue_error: Callable[[str], None] = lambda operation: None
        self.on_resubscribed: Callable[[float, set[int]], set[int]] = \
            lambda deaf_since, skip: set()
        self.listening = None  # the listener's pubsub
        self.deaf_since: float | None = None  # wall clock
        self._delivered_while_deaf: set[int] = set()
        self._caught_up: set[int] = set()
        self._caught_up_until = 0.0
        self._unsent: deque[dict[str, Any]] = deque(maxlen=UNSENT_LIMIT)
        self._republishing = False

    def _get_redis_module(self):
        # Upstream reads the module python-socketio imported; it may have been
        # imported without redis (``without_modules`` above).
        import redis

        return redis

    def _new_client(self) -> Any:
        """A client for the URL, built as upstream builds one (Sentinel URLs too).
        Upstream's builder stores it on ``self``; no I/O happens in it, so nothing
        else runs while ``self.redis`` is borrowed."""
        saved = self.redis, self.pubsub
        try:
            super()._redis_connect()
            return self.redis
        finally:
            self.redis, self.pubsub = saved

    def _redis_connect(self):
        if self.redis is None:
            self.redis = self._new_client()
        self.connected = True

    # -- publishing --------------------------------------------------------------------

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
        # The message python-socketio's other processes expect (PubSubManager.emit).
        message = {"method": "emit", "event": event, "data": [data], "binary": False,
                   "namespace": namespace or "/", "room": room, "skip_sid": skip_sid,
                   "callback": None, "host_id": self.host_id}
        if self._unsent or self._publish(message) is None:
            self._keep(message)  # behind any kept before it: order is kept
        if self.deaf_since is not None and isinstance(data, dict) \
                and isinstance(data.get("id"), int) \
                and len(self._delivered_while_deaf) < RECENT_LIMIT:
            self._delivered_while_deaf.add(data["id"])
        self._handle_emit(message)

    def _publish(self, data):
        for pause in PUBLISH_ATTEMPTS:
            if pause:
                self.server.sleep(pause)
            try:
                self._redis_connect()
                return self.redis.publish(self.channel, self.json.dumps(data))
            except Exception as exc:
                failure = type(exc).__name__
        log.error("message queue: publish failed %d times (%s)", len(PUBLISH_ATTEMPTS),
                  failure)
        self.on_queue_error("publish")
        return None

    def _keep(self, message: dict[str, Any]) -> None:
        if len(self._unsent) == UNSENT_LIMIT:
            log.error("message queue: %d unpublished messages kept; the oldest is "
                      "dropped (stored: clients replay it, the dispatcher re-sends it)",
                      UNSENT_LIMIT)
        self._unsent.append(message)
        if not self._republishing:
            self._republishing = True
            self.server.start_background_task(self._republish)

    def _republish(self) -> None:
        delay = LISTEN_RETRY_MIN
        try:
            while self._unsent:
                self.server.sleep(delay)
                while self._unsent and self._publish(self._unsent[0]) is not None:
                    self._unsent.popleft()
                delay = min(delay * 2, LISTEN_RETRY_MAX)
            log.warning("message queue: kept messages published again")
        finally:
            self._republishing = False

    # -- listening ---------------------------------------------------------------------

    def _redis_listen_with_retries(self):
        delay = LISTEN_RETRY_MIN
        client = self._new_client()  # its own pool: publishing never touches it
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self.listening = pubsub
                delay = LISTEN_RETRY_MIN
                if self.deaf_since is not None:
                    self._resubscribed()
                yield from pubsub.listen()
            except Exception as exc:
                if self.deaf_since is None:
                    self.deaf_since = time.time()
                    log.error("message queue: subscription lost (%s); resubscribing",
                              type(exc).__name__)
                self.on_queue_error("subscribe")
                try:
                    pubsub.close()
                except Exception:
                    pass
                self.server.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX)

    def _resubscribed(self) -> None:
        deaf_since, skip = self.deaf_since, self._delivered_while_deaf
        self.deaf_since, self._delivered_while_deaf = None, set()
        sent = self.on_resubscribed(deaf_since, skip)
        self._caught_up = set(list(sent)[:RECENT_LIMIT])
        self._caught_up_until = time.monotonic() + CAUGHT_UP_TTL

    def _handle_emit(self, message):
        if self._caught_up and message.get("event") == NOTIFICATION_EVENT \
                and message.get("host_id") != self.host_id:
            if time.monotonic() > self._caught_up_until:
                self._caught_up = set()
            else:
                data = (message.get("data") or [None])[0]
                if isinstance(data, dict) and data.get("id") in self._caught_up:
                    return  # the catch-up sent it already
        return super()._handle_emit(message)


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
