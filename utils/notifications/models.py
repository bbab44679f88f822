"""The tables: notifications, idempotency keys and named watermarks, and the plain
records the store hands around."""

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


class Notification(db.Model):
    __tablename__ = "notifications"
    # AUTOINCREMENT keeps SQLite from reusing the ids of pruned rows, so ids only grow.
    __table_args__ = (
        sa.Index("ix_notifications_user_id_id", "user_id", "id"),
        sa.Index("ix_notifications_user_unread", "user_id", "read_at"),
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "body": self.body,
            "data": self.data if self.data is not None else {},
            "created_at": isoformat(self.created_at),
            "read_at": isoformat(self.read_at),
        }


class IdempotencyKey(db.Model):
    """A producer's Idempotency-Key and the answer its first request got."""

    __tablename__ = "idempotency_keys"

    key = sa.Column(sa.String(255), primary_key=True)
    fingerprint = sa.Column(sa.String(64), nullable=False)
    response = sa.Column(sa.JSON, nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)


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
        return {"id": self.id, "type": self.type, "title": self.title, "body": self.body,
                "data": self.data if self.data is not None else {},
                "created_at": isoformat(self.created_at), "read_at": None}
