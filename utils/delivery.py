"""Exactly-once delivery around replay, enforced where Socket.IO delivers to sockets.

A socket that connects with ``last_id`` is replayed from the store while live
notifications keep arriving in its user's room. Without care a notification stored
during the replay would reach the socket twice (read by the replay query and
emitted live) or out of order (emitted live before older ones are replayed).

The guard closes both: while a socket replays, live ``notification`` emits meant
for it are held back; when the replay ends they are released in id order, minus
any the replay already sent. Afterwards a live emit is dropped only when its id is
at or below the replay's high-water mark, so live notifications from concurrent
producers are never dropped for arriving out of order.

The check runs in the client manager's local delivery, which every emit reaches:
direct, in-process room emits, and (with Redis) emits from any other process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import socketio

log = logging.getLogger(__name__)

NOTIFICATION_EVENT = "notification"


class ReplayGuard:
    def __init__(self) -> None:
        self._upto: dict[str, int] = {}
        self._held: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def begin(self, sid: str) -> None:
        with self._lock:
            self._held[sid] = []

    def finish(self, sid: str, replayed_upto: int) -> list[dict[str, Any]]:
        """End the replay; returns the held notifications still to send, in id order."""
        with self._lock:
            held = self._held.pop(sid, [])
            if replayed_upto:
                self._upto[sid] = replayed_upto
        fresh = {n["id"]: n for n in held if n["id"] > replayed_upto}
        return [fresh[i] for i in sorted(fresh)]

    def forget(self, sid: str) -> None:
        with self._lock:
            self._held.pop(sid, None)
            self._upto.pop(sid, None)

    def admit(self, sid: str, notification: dict[str, Any]) -> bool:
        """Whether a live notification goes out to ``sid`` now."""
        held = self._held.get(sid)
        if held is not None:
            with self._lock:
                held = self._held.get(sid)
                if held is not None:
                    held.append(notification)
                    return False
        upto = self._upto.get(sid)
        return upto is None or notification["id"] > upto


class GuardedManager(socketio.Manager):
    """The in-process client manager, with every local delivery passing the guard."""

    guard: ReplayGuard

    def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None,
             to=None, **kwargs):
        room = to or room
        if (
            event == NOTIFICATION_EVENT
            and room is not None
            and isinstance(data, dict)
            and isinstance(data.get("id"), int)
            and namespace in self.rooms
        ):
            skip = list(skip_sid) if isinstance(skip_sid, list) else [skip_sid]
            for sid, _ in list(self.get_participants(namespace, room)):
                # An emit addressed to the sid itself is the replay's own send.
                if sid != room and not self.guard.admit(sid, data):
                    skip.append(sid)
            skip_sid = skip
        return super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                            callback=callback, **kwargs)


class GuardedRedisManager(socketio.RedisManager, GuardedManager):
    """Redis pub/sub for several processes. The MRO is RedisManager, PubSubManager,
    GuardedManager, Manager: local delivery is guarded.

    Redis pub/sub forgets what it cannot deliver, so an outage leaves gaps, and a
    client whose ``last_id`` moved past a gap would never replay it. Hence, for
    ``notification`` emits: while the queue is down nothing is delivered live (the
    rows are stored); once this process is subscribed again it closes its sockets'
    transports, and their clients reconnect with ``last_id`` and replay the gap.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue_down = False
        self.listening = None  # the listener's pubsub (publishing may replace self.pubsub)
        self.redis_options = {**REDIS_OPTIONS, **self.redis_options}

    def _get_redis_module(self):
        # python-socketio may have been imported without redis (utils/imports.py).
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
        """Subscribe, and resubscribe quickly after a failure (python-socketio's own
        loop backs off up to 60 s, during which emits from other processes are lost)."""
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
                _count_queue_error("subscribe")
                self.server.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX)

    def _recovered(self) -> None:
        from utils.drain import close_transports

        self.queue_down = False
        count = close_transports(self.server.eio, self.server.sleep)
        log.warning("message queue back: closed %d transport(s) so their clients "
                    "reconnect and replay what they missed", count)

    def _publish(self, data):
        # python-socketio logs a publish it gave up on and returns None; count it.
        result = super()._publish(data)
        if result is None:
            _count_queue_error("publish")
        return result


def _count_queue_error(operation: str) -> None:
    from utils.metrics import queue_error  # imported late: the metrics need Flask

    queue_error(operation)


# Bounded connects and TCP keepalive, so a dead Redis is noticed, not waited on.
REDIS_OPTIONS = {"socket_connect_timeout": 5, "socket_keepalive": True}
LISTEN_RETRY_MIN, LISTEN_RETRY_MAX = 0.25, 2.0


def make_manager(guard: ReplayGuard, redis_url: str | None, channel: str, logger=None):
    if redis_url:
        manager = GuardedRedisManager(redis_url, channel=channel, logger=logger)
    else:
        manager = GuardedManager()
    manager.guard = guard
    return manager
