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

from utils import protocol
from utils.patches import RedisQueuePatches

log = logging.getLogger(__name__)


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
            event == protocol.NOTIFICATION
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


class GuardedRedisManager(RedisQueuePatches, socketio.RedisManager, GuardedManager):
    """Redis pub/sub for several processes, with local delivery guarded (the MRO puts
    GuardedManager after PubSubManager) and Redis outages turned into replays
    (``RedisQueuePatches`` in utils/patches/)."""


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
