"""Push's tables: browsers' subscriptions, and the pushes queued for them."""

from __future__ import annotations

import sqlalchemy as sa

from utils.auth.tokens import MAX_USER_ID_LENGTH
from utils.extensions import db
from utils.notifications.models import IdType, utcnow


class PushSubscription(db.Model):
    """A browser's PushSubscription: where to send a user's pushes, and its keys."""

    __tablename__ = "push_subscriptions"

    id = sa.Column(IdType, primary_key=True, autoincrement=True)
    user_id = sa.Column(sa.String(MAX_USER_ID_LENGTH), nullable=False, index=True)
    endpoint = sa.Column(sa.String(2048), nullable=False, unique=True)
    p256dh = sa.Column(sa.String(100), nullable=False)
    auth = sa.Column(sa.String(40), nullable=False)
    expires_at = sa.Column(sa.DateTime, nullable=True)  # the browser's expirationTime
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    last_success_at = sa.Column(sa.DateTime, nullable=True)
    # Turned off by its user (PATCH /api/push/subscriptions/<id>): kept, not pushed to.
    enabled = sa.Column(sa.Boolean, nullable=False, default=True, server_default=sa.true())


class PushSend(db.Model):
    """One push of one notification to one subscription, due at ``due_at``: queued
    work in the database, so a restart loses none. A node claims due rows by moving
    ``due_at`` past the time its send may take."""

    __tablename__ = "push_sends"
    __table_args__ = (sa.Index("ix_push_sends_collapse", "subscription_id", "collapse_key"),)

    id = sa.Column(IdType, primary_key=True, autoincrement=True)
    notification_id = sa.Column(IdType, nullable=False, index=True)
    subscription_id = sa.Column(IdType, nullable=False, index=True)
    due_at = sa.Column(sa.DateTime, nullable=False, index=True)
    expires_at = sa.Column(sa.DateTime, nullable=False)  # created + PUSH_TTL
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    # Held back by quiet hours or a collapse window: dropped at its due time when the
    # notification was delivered or read meanwhile, whatever its push mode.
    deferred = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())
    # The notification's collapse_key, and how many older pushes this one replaced.
    collapse_key = sa.Column(sa.String(64), nullable=True)
    folded = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
