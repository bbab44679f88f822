"""The Redis message queue (REDIS_URL) and the policy for its outages, in one place:
python-socketio's RedisManager with this service's changes (``RedisQueuePatches``),
the client manager each app gets (``make_manager``), the readiness probe, and the
catch-up after a lost subscription. redis itself is imported only when REDIS_URL is
set.

The catch-up, after the listener lost its subscription: while a process's
subscription is down,
the notifications other processes publish never reach it, and its sockets miss them
live. When it subscribes again, this reads what was stored since shortly before it
went deaf and sends each row whose user has a socket here to that user's room, on
this process only. Nobody reconnects. The margin covers messages that were in flight
when the subscription broke and clock skew between nodes; a client may therefore get
a notification it already had, and deduplicates it by id, as it does for the
dispatcher's re-sends.

An outage long enough to store more than ``REDIS_CATCH_UP_LIMIT`` rows is left to the
clients' own replay instead: this process's transports are ended, and every client
reconnects with its ``last_id``."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import socketio
import sqlalchemy as sa
from flask import Flask

from utils import protocol
from utils.extensions import db
from utils.notifications.models import Notification, notification_payload
from utils.realtime.drain import DrainLayer, close_transports
from utils.realtime.registry import SocketRegistry
from utils.realtime.replay import GuardedManager, ReplayGuard

log = logging.getLogger(__name__)


def redis_probe(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    """A readiness check that pings Redis with a bounded timeout."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def probe() -> bool:
        try:
            return bool(client.ping())
        except Exception as exc:
            log.warning("readiness: message queue error: %s", type(exc).__name__)
            return False

    return probe


# ------------------------------------------------- python-socketio's RedisManager, changed

LISTEN_RETRY_MIN, LISTEN_RETRY_MAX = 0.25, 2.0



# Bounded connects and TCP keepalive, so a dead Redis is noticed, not waited on.
REDIS_OPTIONS = {"socket_connect_timeout": 5, "socket_keepalive": True}


PUBLISH_ATTEMPTS = (0.0, 0.05, 0.25)  # the pause before each attempt


UNSENT_LIMIT = 10_000  # messages kept for publishing again while Redis refuses them


RECENT_LIMIT = 10_000  # ids remembered while the listener is down, and after a catch-up


CAUGHT_UP_TTL = 60.0




class RedisQueuePatches:
    """Mixed in before ``socketio.RedisManager`` (``GuardedRedisManager`` below).

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
        if kwargs.get("ignore_queue") or callback is not None or event != protocol.NOTIFICATION:
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
        if self._caught_up and message.get("event") == protocol.NOTIFICATION \
                and message.get("host_id") != self.host_id:
            if time.monotonic() > self._caught_up_until:
                self._caught_up = set()
            else:
                data = (message.get("data") or [None])[0]
                if isinstance(data, dict) and data.get("id") in self._caught_up:
                    return  # the catch-up sent it already
        return super()._handle_emit(message)


class GuardedRedisManager(RedisQueuePatches, socketio.RedisManager, GuardedManager):
    """Redis pub/sub for several processes, with local delivery guarded (the MRO puts
    GuardedManager after PubSubManager) and Redis outages turned into replays
    (``RedisQueuePatches`` above)."""


def _count_queue_error(operation: str) -> None:
    from utils.ops.metrics import queue_error  # imported late: the metrics need Flask

    queue_error(operation)


def make_manager(guard: ReplayGuard, redis_url: str | None, channel: str, logger=None):
    if redis_url:
        manager = GuardedRedisManager(redis_url, channel=channel, logger=logger)
        manager.on_queue_error = _count_queue_error
    else:
        manager = GuardedManager()
    manager.guard = guard
    return manager


# ------------------------------------------------------------ the catch-up

CATCH_UP_MARGIN = 2.0  # seconds before the subscription was seen to fail
CATCH_UP_LIMIT = 5000  # REDIS_CATCH_UP_LIMIT's default

_N = Notification.__table__


def since_moment(deaf_since: float) -> datetime:
    """Naive UTC, as the store keeps ``created_at``."""
    return datetime.fromtimestamp(deaf_since - CATCH_UP_MARGIN, UTC).replace(tzinfo=None)


def stored_since(moment: datetime, limit: int) -> list[sa.Row]:
    query = (sa.select(_N.c.id, _N.c.user_id, _N.c.type, _N.c.title, _N.c.body, _N.c.data,
                       _N.c.created_at, _N.c.read_at, _N.c.delivered_at)
             .where(_N.c.created_at >= moment).order_by(_N.c.id).limit(limit + 1))
    with db.engine.connect() as conn:
        return list(conn.execute(query))


def make_catch_up(app: Flask, registry: SocketRegistry, server: Any,
                  tracker: Callable[[], DrainLayer | None] = lambda: None,
                  limit: int = CATCH_UP_LIMIT) -> Callable[[float, set[int]], set[int]]:
    """``on_resubscribed`` for the Redis manager: returns the ids it re-sent. When
    there is too much to re-send, it ends the transports the way the SIGTERM drain
    does (``tracker`` gives the app's DrainLayer, for its WebSockets), without
    refusing new sessions."""

    def catch_up(deaf_since: float, skip: set[int]) -> set[int]:
        users = registry.users()
        if not users:
            return set()
        try:
            with app.app_context():
                rows = stored_since(since_moment(deaf_since), limit)
        except Exception as exc:  # the database too: the clients' replay is all that is left
            log.error("message queue back, but the catch-up read failed (%s)",
                      type(exc).__name__)
            rows = [None] * (limit + 1)
        if len(rows) > limit:
            count = close_transports(server.eio, tracker(), server.sleep, refuse_new=False)
            log.warning("message queue back after %.0f s: too much to re-send; closed %d "
                        "transport(s) so their clients reconnect and replay",
                        time.time() - deaf_since, count)
            return set()
        sent = set()
        for row in rows:
            if row.user_id in users and row.id not in skip:
                server.emit(protocol.NOTIFICATION, notification_payload(
                    row.id, row.type, row.title, row.body, row.data, row.created_at,
                    row.read_at, row.delivered_at), to=protocol.user_room(row.user_id),
                    namespace="/", ignore_queue=True)
                sent.add(row.id)
        log.warning("message queue back after %.1f s: re-sent %d notification(s) stored "
                    "meanwhile to this process's sockets", time.time() - deaf_since, len(sent))
        return sent

    return catch_up
