"""Replay: what a socket missed, sent on CONNECT (``connect``, which the "connect"
handler calls), and exactly-once delivery around it, enforced where Socket.IO
delivers to sockets. A Redis outage's catch-up is in queue.py.

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
from typing import TYPE_CHECKING, Any

import socketio
from flask import request
from flask_socketio import emit, join_room

from utils import protocol
from utils.auth.access import authenticate_socket
from utils.edge.limits import socket_limits
from utils.errors import ValidationError
from utils.extensions import db
from utils.extensions import socketio as flask_socketio
from utils.notifications import store
from utils.notifications.validation import check_data, positive_id
from utils.ops import metrics
from utils.services import services

if TYPE_CHECKING:
    from utils.realtime.state import Realtime

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


# ------------------------------------------------------------ the replay on CONNECT

REPLAY_LIMIT = 100


def _last_id(auth: Any) -> int | None:
    """The client's replay cursor; an unusable value counts as none."""
    if not isinstance(auth, dict) or auth.get("last_id") is None:
        return None
    try:
        return positive_id(auth["last_id"], "last_id", allow_zero=True)
    except ValidationError:
        return None


def connect(auth: Any) -> None:
    """A socket's CONNECT, in the handler's request context: the limits, the token, the
    user's room, the unread count, then what it missed since ``auth["last_id"]``."""
    rt, limits = services().realtime, socket_limits()
    limits.check_connect(request.environ)  # attempts per client IP, refused ones too
    verified = authenticate_socket(auth, request.environ)
    sid, user_id = request.sid, verified.user_id
    last_id = _last_id(auth)
    # The database work of a connect (the count on a connection of its own, returned
    # at once; the replay's read in the session) is done by at most rt.gate.capacity
    # connects at once: a reconnect wave waits here, or is refused server_busy,
    # instead of draining the pool.
    with rt.gate.admit():
        try:
            with db.engine.connect() as conn:
                unread = store.unread_count(user_id, conn)
            # No I/O between the count and add(), so concurrent connects cannot both
            # slip in.
            limits.check_user_cap(rt.registry.count_for(user_id))
            rt.registry.add(sid, user_id, verified.expires_at)
            if last_id is not None:
                rt.guard.begin(sid)
            join_room(protocol.user_room(user_id))
            emit(protocol.AUTH_SUCCESS, {"user_id": user_id, "unread_count": unread})
            missed = _read_replay(user_id, last_id)
        finally:
            if last_id is not None:
                db.session.rollback()  # the replay's connection goes back before it is sent
    rt.sweeper.ensure_started()
    _replay(rt, sid, last_id, missed)
    metrics.connected(flask_socketio)  # replay done too


Missed = tuple[list[dict[str, Any]], int, bool, bool]


def _read_replay(user_id: str, last_id: int | None) -> Missed | None:
    """What a connect with ``last_id`` missed: payloads, the id read up to, whether
    more remain, and whether pruning left a gap."""
    if last_id is None:
        return None
    payloads, upto, has_more = deliverable_after(user_id, last_id, REPLAY_LIMIT)
    return payloads, upto, has_more, last_id < store.pruned_through()


def _replay(rt: Realtime, sid: str, last_id: int | None, missed: Missed | None) -> None:
    if last_id is None or missed is None:
        emit(protocol.SYNC_COMPLETE, {"last_id": None, "replayed": 0, "has_more": False,
                               "gap": False})
        return
    payloads, upto, has_more, gap = missed
    for payload in payloads:
        emit(protocol.NOTIFICATION, payload, to=sid)
    metrics.replayed(len(payloads))
    cursor = upto  # past the skipped ones too
    for held in rt.guard.finish(sid, upto):
        emit(protocol.NOTIFICATION, held, to=sid)
        if not has_more:
            cursor = held["id"]
    emit(protocol.SYNC_COMPLETE, {"last_id": cursor, "replayed": len(payloads),
                           "has_more": has_more, "gap": gap})


def deliverable_after(user_id: str, after_id: int,
                       limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """store.after() as payloads, with the id read up to and whether more remain. A
    stored row that cannot be delivered (data too deep to load, or refused by today's
    check_data: NaN, too deep, not Unicode), written by an older version or straight
    into the database, is logged and skipped: it never blocks the rows after it."""
    try:
        rows, has_more = store.after(user_id, after_id, limit)
    except (RecursionError, ValueError):
        # Some row's data cannot even be loaded: load each row's data on its own.
        db.session.rollback()
        rows, has_more = store.after(user_id, after_id, limit, lazy_data=True)
    payloads, upto = [], after_id
    for row in rows:
        upto = row.id
        try:
            payload = row.to_dict()
            check_data(payload["data"])
        except (RecursionError, ValueError) as exc:  # a ValidationError is a ValueError
            log.warning("notification %s cannot be delivered, skipped: %s", upto, exc)
            continue
        payloads.append(payload)
    return payloads, upto, has_more
