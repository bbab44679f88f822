"""Socket.IO handlers for namespace "/": one method of ``Events`` per event."""

from __future__ import annotations

import logging
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, Namespace, SocketIO
from sqlalchemy.exc import SQLAlchemyError

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


class Events(Namespace):
    """Socket.IO handlers for "/", one method per event: ``on_<event>``. An event with
    no method gets the ``unknown_event`` ack. ``create_app`` registers an instance on
    each app's server (``register``), so adding an event is adding a method, and no
    import order can lose a handler. A method runs in Flask-SocketIO's request context
    (``request.sid``), except for RAW_EVENTS."""

    def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect") or hasattr(self, "on_" + (event or "")):
            if event in RAW_EVENTS:
                return getattr(self, "on_" + event)(*args)  # the sid first: see RAW_EVENTS
            return super().trigger_event(event, *args)
        # A class namespace has no catch-all: an unknown event gets its name first, as
        # a "*" handler does, through Flask-SocketIO's own handler wrapper.
        sid, *rest = args
        return self.socketio._handle_event(self.unknown_event, "*", self.namespace, sid,
                                           event, *rest)

    def on_connect(self, auth: Any = None) -> None:
        """Browsers: open a socket with a token; join the user's room, replay what was missed."""
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
        environ = self.server.get_environ(sid, namespace=self.namespace)
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
        log.error("database error in a socket event: %s", type(exc).__name__)
        metrics.database_error("socket")
        return error_body("database_unavailable", "the database is unavailable; retry later")
    log.exception("socket event failed")
    return error_body("internal_error", "the server failed to handle this event")


def register(socketio: SocketIO) -> None:
    """The handlers, on the server ``socketio.init_app`` has just built: called by
    ``create_app`` after it, so each app's server has its own."""
    socketio.on_namespace(Events("/"))
    socketio.on_error_default(error_ack)
