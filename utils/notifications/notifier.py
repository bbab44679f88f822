"""The one path that stores notifications and then emits them."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from utils.extensions import db, socketio
from utils.notifications import store
from utils.notifications.models import IdempotencyKey, NewNotification
from utils.notifications.sqlite_locks import retry_when_locked
from utils.ops import metrics
from utils.realtime import protocol

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL = timedelta(hours=24)
class IdempotencyConflict(Exception):
    """An Idempotency-Key reused with a different request body."""


@dataclass(frozen=True)
class Delivery:
    response: dict[str, Any]
    replayed: bool  # True when an Idempotency-Key matched an earlier request


def fingerprint(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def emit_notification(user_id: str, payload: dict[str, Any],
                      started: float | None = None) -> None:
    try:
        socketio.emit(protocol.NOTIFICATION, payload, to=protocol.user_room(user_id))
        metrics.emitted(started)
    except Exception:
        metrics.queue_error("emit")
        # Stored already: the client gets it on its next replay.
        log.exception("emit failed for a stored notification (id %s)", payload.get("id"))


def push_unread_count(user_id: str, count: int, skip_sid: str | None = None) -> None:
    try:
        socketio.emit(protocol.UNREAD_COUNT, {"unread_count": count},
                      to=protocol.user_room(user_id), skip_sid=skip_sid)
    except Exception:
        log.exception("could not push an unread count")


def notify_users(
    user_ids: Iterable[str],
    type: str,
    title: str,
    body: str | None = None,
    data: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Delivery:
    """Store one notification per user in one transaction, then emit each to its
    user's room. With an idempotency key, a repeat returns the first answer."""
    started = metrics.producer_started()
    users = [str(u) for u in user_ids]
    items = [NewNotification(u, type, title, body, data or {}) for u in users]
    delivery, payloads = _store(items, idempotency_key, request_fingerprint or "")
    if delivery.replayed:
        return delivery
    for user_id, payload in zip(users, payloads, strict=True):
        emit_notification(user_id, payload, started)
    return delivery


@retry_when_locked
def _store(items: list[NewNotification], idempotency_key: str | None,
           request_fingerprint: str) -> tuple[Delivery, list[dict[str, Any]]]:
    """The unit of work: the idempotency check, the notifications and the key, in one
    transaction. Run again whole when SQLite is locked (the check included: a
    duplicate may have committed meanwhile)."""
    if idempotency_key:
        earlier = _earlier_answer(idempotency_key, request_fingerprint)
        if earlier is not None:
            return earlier, []
    try:
        rows = store.insert_notifications(items)
        payloads = [row.to_dict() for row in rows]
        response = {"notifications": [{"id": p["id"], "user_id": item.user_id}
                                      for p, item in zip(payloads, items, strict=True)]}
        if idempotency_key:
            db.session.add(IdempotencyKey(
                key=idempotency_key, fingerprint=request_fingerprint, response=response))
        db.session.commit()
        metrics.stored(len(rows))
    except IntegrityError:
        db.session.rollback()
        if idempotency_key:
            # A concurrent request with the same key committed first.
            earlier = _earlier_answer(idempotency_key, request_fingerprint)
            if earlier is not None:
                return earlier, []
        raise
    except Exception:
        db.session.rollback()
        raise
    return Delivery(response, replayed=False), payloads


def notify_user(user_id: str, type: str, title: str, body: str | None = None,
                data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Store and emit one notification; returns its ``{"id", "user_id"}``."""
    delivery = notify_users([user_id], type, title, body, data)
    return delivery.response["notifications"][0]


def _earlier_answer(key: str, request_fingerprint: str) -> Delivery | None:
    row = store.find_idempotency_key(key, IDEMPOTENCY_TTL)
    if row is None:
        return None
    if row.fingerprint != request_fingerprint:
        db.session.rollback()
        raise IdempotencyConflict(key)
    response = row.response
    db.session.rollback()
    return Delivery(response, replayed=True)
