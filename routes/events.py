"""Socket.IO handlers for namespace "/"."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, request
from flask_socketio import ConnectionRefusedError, emit, join_room
from sqlalchemy.exc import SQLAlchemyError

from utils.auth.access import authenticate_socket
from utils.edge.errors import error_body
from utils.edge.limits import socket_limits, throttled
from utils.extensions import db, socketio
from utils.notifications import store
from utils.notifications.notifier import push_unread_count
from utils.notifications.receipts import record_receipt
from utils.notifications.validation import (
    ValidationError,
    check_data,
    delivered_request,
    page_limit,
    positive_id,
    read_request,
)
from utils.ops import metrics
from utils.realtime import protocol
from utils.realtime.state import Realtime

log = logging.getLogger(__name__)

REPLAY_LIMIT = 100


def realtime() -> Realtime:
    return current_app.extensions[Realtime.KEY]


def _last_id(auth: Any) -> int | None:
    """The client's replay cursor; an unusable value counts as none."""
    if not isinstance(auth, dict) or auth.get("last_id") is None:
        return None
    try:
        return positive_id(auth["last_id"], "last_id", allow_zero=True)
    except ValidationError:
        return None


@socketio.on("connect")
def on_connect(auth: Any = None) -> None:
    """Browsers: open a socket with a token; join the user's room, replay what was missed."""
    try:
        _connect(auth)
    except ConnectionRefusedError as exc:
        metrics.refused(exc)
        raise
    except Exception as exc:
        # Anything else must still be a refusal: Flask-SocketIO retries a handler that
        # raises TypeError without its argument, and a traceback helps no client.
        if isinstance(exc, (SQLAlchemyError, ConnectionError)):  # retryable, and known
            log.error("connect refused: database error %s", type(exc).__name__)
        else:
            log.exception("connect failed")
        metrics.connect_failed(exc)
        realtime().forget(request.sid)
        db.session.rollback()
        raise ConnectionRefusedError("unavailable", {"code": "server_unavailable"}) from None


def _connect(auth: Any) -> None:
    rt, limits = realtime(), socket_limits()
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
    metrics.connected(socketio.start_background_task, socketio.sleep)  # replay done too


Missed = tuple[list[dict[str, Any]], int, bool, bool]


def _read_replay(user_id: str, last_id: int | None) -> Missed | None:
    """What a connect with ``last_id`` missed: payloads, the id read up to, whether
    more remain, and whether pruning left a gap."""
    if last_id is None:
        return None
    payloads, upto, has_more = _deliverable_after(user_id, last_id, REPLAY_LIMIT)
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


def _deliverable_after(user_id: str, after_id: int,
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


@socketio.on("disconnect")
def on_disconnect(*_reason: Any) -> None:
    """Socket.IO: a socket went away; forget it."""
    realtime().forget(request.sid)
    socket_limits().forget(request.sid)


def _current_user() -> str:
    user_id = realtime().registry.user_of(request.sid)
    if user_id is None:
        raise ValidationError("this socket is not authenticated", code="not_connected")
    return user_id


@socketio.on("mark_read")
@throttled
def on_mark_read(payload: Any = None) -> dict[str, Any]:
    """Browsers: mark notifications read; the user's other sockets get the new count."""
    user_id = _current_user()
    ids = read_request(payload)
    updated = store.mark_read(user_id, ids)
    count = store.unread_count(user_id)
    db.session.rollback()
    push_unread_count(user_id, count, skip_sid=request.sid)
    return {"updated": updated, "unread_count": count}


@socketio.on("delivered")
@throttled
def on_delivered(payload: Any = None) -> dict[str, Any]:
    """Browsers: receipts for notifications this device received (live, replayed or
    synced); the first receipt of each sets its delivered_at."""
    user_id = _current_user()
    return {"updated": record_receipt(user_id, delivered_request(payload))}


@socketio.on("sync")
@throttled
def on_sync(payload: Any = None) -> dict[str, Any]:
    """Browsers: page through stored notifications after ``after_id``, oldest first."""
    user_id = _current_user()
    if not isinstance(payload, dict):
        raise ValidationError('send {"after_id": <int>, "limit": <int>}')
    after_id = positive_id(payload.get("after_id", 0), "after_id", allow_zero=True)
    limit = page_limit(payload.get("limit"), default=REPLAY_LIMIT)
    payloads, _upto, has_more = _deliverable_after(user_id, after_id, limit)
    db.session.rollback()
    return {"notifications": payloads, "has_more": has_more}


@socketio.on("*")
@throttled
def on_unknown(event: str, *_args: Any) -> dict[str, Any]:
    """Browsers: an event this server does not know."""
    return error_body("unknown_event", f"unknown event {str(event)[:64]!r}")


@socketio.on_error_default
def on_event_error(exc: Exception) -> dict[str, Any]:
    """Any handler's failure becomes an error ack; the connection stays up."""
    db.session.rollback()
    if isinstance(exc, ValidationError):
        return error_body(exc.code, exc.message)
    if isinstance(exc, TypeError):
        return error_body("validation_error", "unexpected arguments for this event")
    if isinstance(exc, (SQLAlchemyError, ConnectionError)):  # see utils/edge/errors.py
        log.error("database error in a socket event: %s", type(exc).__name__)
        metrics.database_error("socket")
        return error_body("database_unavailable", "the database is unavailable; retry later")
    log.exception("socket event failed")
    return error_body("internal_error", "the server failed to handle this event")
