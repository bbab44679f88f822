"""The tables: notifications, idempotency keys, named watermarks, push subscriptions
and pushes due, and the plain records the store hands around."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from utils.auth.tokens import MAX_USER_ID_LENGTH
from utils.extensions import db

# SQLite only autoincrements an INTEGER PRIMARY KEY; elsewhere ids are 64-bit.
IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no zone, so every database stores UTC without one."""
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def notification_payload(id: int, type: str, title: str, body: str | None, data: Any,
                         created_at: datetime, read_at: datetime | None = None,
                         delivered_at: datetime | None = None) -> dict[str, Any]:
    """The notification object of docs/API.md: what sockets, the inbox and pushes carry."""
    return {"id": id, "type": type, "title": title, "body": body,
            "data": data if data is not None else {}, "created_at": isoformat(created_at),
            "read_at": isoformat(read_at), "delivered_at": isoformat(delivered_at)}


class Notification(db.Model):
    __tablename__ = "notifications"
    # AUTOINCREMENT keeps SQLite from reusing the ids of pruned rows, so ids only grow.
    __table_args__ = (
        sa.Index("ix_notifications_user_id_id", "user_id", "id"),
        sa.Index("ix_notifications_user_unread", "user_id", "read_at"),
        sa.Index("ix_notifications_check_at", "check_at"),
        sa.Index("ix_notifications_push_at", "push_at",
                 postgresql_where=sa.text("push_at IS NOT NULL"),
                 sqlite_where=sa.text("push_at IS NOT NULL")),
        {"sqlite_autoincrement": True},
    )

    id = sa.Column(IdType, primary_key=True, autoincrement=True)
    user_id = sa.Column(sa.String(MAX_USER_ID_LENGTH), nullable=False)
    type = sa.Column(sa.String(64), nullable=False)
    title = sa.Column(sa.String(200), nullable=False)
    body = sa.Column(sa.Text, nullable=True)
    data = sa.Column(sa.JSON, nullable=False, default=dict)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)
    read_at = sa.Column(sa.DateTime, nullable=True)
    # The first receipt from any of the user's devices; read implies delivered.
    delivered_at = sa.Column(sa.DateTime, nullable=True)
    # When to check delivery: still undelivered then, it is emitted again and, with
    # push "auto", pushed. Cleared by the check, a receipt or a read.
    check_at = sa.Column(sa.DateTime, nullable=True)
    # push "always": when to push regardless of delivery; cleared once pushes are queued.
    push_at = sa.Column(sa.DateTime, nullable=True)
    push = sa.Column(sa.String(8), nullable=False, default="auto", server_default="auto")
    push_urgency = sa.Column(sa.String(8), nullable=True)
    push_topic = sa.Column(sa.String(32), nullable=True)
    # Issue 23: preferences and quiet hours cannot hold a critical one back; pushes with
    # one collapse_key for one user fold into one (utils/push/checks.py).
    critical = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())
    collapse_key = sa.Column(sa.String(64), nullable=True)
    collapse_template = sa.Column(sa.String(100), nullable=True)

    def to_dict(self) -> dict[str, Any]:
        return notification_payload(self.id, self.type, self.title, self.body, self.data,
                                    self.created_at, self.read_at, self.delivered_at)


class IdempotencyKey(db.Model):
    """A producer's Idempotency-Key and the answer its first request got."""

    __tablename__ = "idempotency_keys"

    key = sa.Column(sa.String(255), primary_key=True)
    fingerprint = sa.Column(sa.String(64), nullable=False)
    response = sa.Column(sa.JSON, nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)


class UserPreferences(db.Model):
    """A user's preference set (utils/notifications/preferences.py), as its JSON. A
    user without a row has the defaults: every channel on, no quiet hours."""

    __tablename__ = "user_preferences"

    user_id = sa.Column(sa.String(MAX_USER_ID_LENGTH), primary_key=True)
    settings = sa.Column(sa.JSON, nullable=False)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class Watermark(db.Model):
    """Named counters; ``pruned_through`` is the highest notification id ever pruned."""

    __tablename__ = "watermarks"

    name = sa.Column(sa.String(64), primary_key=True)
    value = sa.Column(IdType, nullable=False)


@dataclass(frozen=True)
class NewNotification:
    user_id: str
    type: str
    title: str
    body: str | None
    data: dict[str, Any]
    push: str = "auto"
    urgency: str | None = None
    topic: str | None = None
    critical: bool = False
    collapse_key: str | None = None
    collapse_template: str | None = None
    # Muted for in_app alone: stored already read (kept in the history, never counted
    # unread nor emitted) so that its push can still be sent.
    seen: bool = False


@dataclass(frozen=True)
class InsertedNotification:
    """A row as inserted: enough to answer the producer and build the emitted payload
    without reading the row back."""

    id: int
    user_id: str
    type: str
    title: str
    body: str | None
    data: dict[str, Any]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return notification_payload(self.id, self.type, self.title, self.body, self.data,
                                    self.created_at)
