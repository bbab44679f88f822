"""Socket.IO handlers for namespace "/": one method of ``Events`` per event."""

from __future__ import annotations

import logging
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO
from sqlalchemy.exc import SQLAlchemyError

from utils.db.schema import names_a_missing_table
from utils.edge.error_handlers import NOT_MIGRATED, NOT_MIGRATED_LOG, NOT_MIGRATED_MESSAGE
from utils.edge.limits import admit_event, socket_limits, throttled
from utils.errors import ValidationError, error_body
from utils.extensions import db
from utils.notifications import store
from utils.notifications.notifier import push_unread_count
from utils.notifications.receipts import record_receipt
from utils.notifications.validation import (
    delivered_request,
    page_limit,
    positive_id,
    read_request,
)
from utils.ops import metrics
from utils.realtime import replay
from utils.realtime.state import Realtime
from utils.services import services

log = logging.getLogger(__name__)


def realtime() -> Realtime:
    return services().realtime


def _current_user() -> str:
    user_id = realtime().registry.user_of(request.sid)
    if user_id is None:
        raise ValidationError("this socket is not authenticated", code="not_connected")
    return user_id


# Events whose method python-socketio's dispatch calls directly, with the sid first
# and no Flask context: the method finds the app in the socket's environ, throttles
# and answers errors itself. Only for an event so frequent that the request context is
# its cost (one receipt per delivered notification).
RAW_EVENTS = frozenset({"delivered"})
NAMESPACE = "/"


class Events:
    """Socket.IO handlers for "/", one method per event: ``on_<event>``. An event with
    no method gets the ``unknown_event`` ack (Flask-SocketIO's "*" catch-all).
    ``create_app`` binds each method on each app's server (``register``), so adding
    an event is adding a method, and no import order can lose a handler. A method runs
    in Flask-SocketIO's request context (``request.sid``), except for RAW_EVENTS.

    Bound one by one as Flask-SocketIO's decorator does, not as a class namespace
    (``socketio.on_namespace``): with the class namespace a worker held about 4 KB
    more per connected socket (bench, 2,000 and 5,000 sockets: 57.0 against 53.0 KB),
    outside Python's own allocations (tracemalloc saw the same heap)."""

    def __init__(self, server: Any) -> None:
        self.server = server  # python-socketio's, for the raw handlers

    def on_connect(self, auth: Any = None) -> None:
        """Browsers: open a socket with a token; join the user's room, replay what was missed."""
        request.routing_exception = None  # a reference cycle: see utils/edge/limits.py throttled
        try:
            replay.connect(auth)
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

    def on_disconnect(self, *_reason: Any) -> None:
        """Socket.IO: a socket went away; forget it."""
        realtime().forget(request.sid)
        socket_limits().forget(request.sid)

    @throttled
    def on_mark_read(self, payload: Any = None) -> dict[str, Any]:
        """Browsers: mark notifications read; the user's other sockets get the new count."""
        user_id = _current_user()
        ids = read_request(payload)
        updated = store.mark_read(user_id, ids)
        count = store.unread_count(user_id)
        db.session.rollback()
        push_unread_count(user_id, count, skip_sid=request.sid)
        return {"updated": updated, "unread_count": count}

    def on_delivered(self, sid: str, *args: Any) -> dict[str, Any] | None:
        """Browsers: receipts for notifications this device received (live, replayed or
        synced); the first receipt of each sets its delivered_at.

        A raw handler (RAW_EVENTS): python-socketio calls it with the sid, with no
        Flask context (the receipts' group write pushes an app context, once per
        group; an error ack pushes its own). Every delivered notification gets a
        receipt, and Flask-SocketIO's request context per event (a Request, a URL match
        that fails, the session copy) cost as much as the rest of the receipt. What
        ``throttled`` and ``error_ack`` do for the other events is done here, with the
        same acks."""
        environ = self.server.get_environ(sid, namespace=NAMESPACE)
        if not environ:
            return error_body("not_connected", "this socket is not connected")
        app = environ["flask.app"]
        try:
            parts = services(app)
            if not admit_event(parts.socket_limits, self.server, sid):
                return None
            if len(args) > 1:
                raise TypeError("delivered takes one argument")
            user_id = parts.realtime.registry.user_of(sid)
            if user_id is None:
                raise ValidationError("this socket is not authenticated", code="not_connected")
            ids = delivered_request(args[0] if args else None)
            return {"updated": record_receipt(user_id, ids, app)}
        except Exception as exc:
            with app.app_context():
                return error_ack(exc)

    @throttled
    def on_sync(self, payload: Any = None) -> dict[str, Any]:
        """Browsers: page through stored notifications after ``after_id``, oldest first."""
        user_id = _current_user()
        if not isinstance(payload, dict):
            raise ValidationError('send {"after_id": <int>, "limit": <int>}')
        after_id = positive_id(payload.get("after_id", 0), "after_id", allow_zero=True)
        limit = page_limit(payload.get("limit"), default=replay.REPLAY_LIMIT)
        payloads, _upto, has_more = replay.deliverable_after(user_id, after_id, limit)
        db.session.rollback()
        return {"notifications": payloads, "has_more": has_more}

    @throttled
    def unknown_event(self, event: str, *_args: Any) -> dict[str, Any]:
        """Browsers: an event this server does not know (no ``on_`` prefix: a client
        cannot call it by name)."""
        return error_body("unknown_event", f"unknown event {str(event)[:64]!r}")


def error_ack(exc: Exception) -> dict[str, Any]:
    """Any handler's failure becomes an error ack; the connection stays up."""
    db.session.rollback()
    if isinstance(exc, ValidationError):
        return error_body(exc.code, exc.message)
    if isinstance(exc, TypeError):
        return error_body("validation_error", "unexpected arguments for this event")
    if isinstance(exc, (SQLAlchemyError, ConnectionError)):  # see utils/edge/error_handlers.py
        metrics.database_error("socket")
        if names_a_missing_table(exc):
            log.error("database error in a socket event: %s: %s", type(exc).__name__,
                      NOT_MIGRATED_LOG)
            return error_body(NOT_MIGRATED, NOT_MIGRATED_MESSAGE)
        log.error("database error in a socket event: %s", type(exc).__name__)
        return error_body("database_unavailable", "the database is unavailable; retry later")
    log.exception("socket event failed")
    return error_body("internal_error", "the server failed to handle this event")


def register(socketio: SocketIO) -> Events:
    """The handlers, on the server ``socketio.init_app`` has just built: called by
    ``create_app`` after it, so each app's server has its own (Flask-SocketIO binds a
    handler declared after ``init_app`` to that server only)."""
    events = Events(socketio.server)
    for name in dir(events):
        if name.startswith("on_"):
            event, method = name.removeprefix("on_"), getattr(events, name)
            if event in RAW_EVENTS:
                socketio.server.on(event, method, namespace=NAMESPACE)
            else:
                socketio.on(event, namespace=NAMESPACE)(method)
    socketio.on("*", namespace=NAMESPACE)(events.unknown_event)
    socketio.on_error_default(error_ack)
    return events
