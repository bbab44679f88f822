"""Delivery checks: each notification is stored with a check due PUSH_AFTER later
(``check_at``); a receipt or a read clears it. When a check falls due and the
notification is still neither delivered nor read, it is emitted again to the user's
sockets (closing the gap of a node that died between commit and publish: clients
deduplicate by id) and, with push "auto", a push is queued to each of the user's
subscriptions (utils/push/sends.py sends them). Push "always" queues them at once
(``push_at``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from utils import protocol
from utils.config import Settings
from utils.db.sqlite_locks import retry_when_locked
from utils.extensions import db, socketio
from utils.notifications.models import Notification, notification_payload, utcnow
from utils.ops import metrics
from utils.push.models import PushSend, PushSubscription
from utils.push.sender import Sender

CHECK_BATCH = 500

_N = Notification.__table__
_SENDS = PushSend.__table__
_SUBS = PushSubscription.__table__


class DeliveryChecks:
    """Claims due checks and "always" pushes, emits again, queues pushes."""

    def __init__(self, settings: Settings, sender: Sender | None) -> None:
        self._settings = settings
        self._sender = sender

    def check_deliveries(self) -> int:
        """Claim due checks and "always" pushes; emit the undelivered again and queue
        their pushes. Returns how many notifications it claimed."""
        claimed, again = self._claim_checks(utcnow())
        for user_id, notification in again:
            try:
                socketio.emit(protocol.NOTIFICATION, notification,
                              to=protocol.user_room(user_id))
            except Exception:  # still stored: the client's next replay has it
                metrics.queue_error("emit")
        metrics.redelivered(len(again))
        return claimed

    @retry_when_locked
    def _claim_checks(self, now: datetime) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        with db.engine.begin() as conn:
            checks = _due_ids(conn, _N.c.check_at, now, CHECK_BATCH)
            always = _due_ids(conn, _N.c.push_at, now, CHECK_BATCH)
            if not checks and not always:
                return 0, []
            rows = conn.execute(sa.select(
                _N.c.id, _N.c.user_id, _N.c.type, _N.c.title, _N.c.body, _N.c.data,
                _N.c.created_at, _N.c.read_at, _N.c.delivered_at, _N.c.push,
            ).where(_N.c.id.in_(checks | always))).all()
            if checks:
                conn.execute(sa.update(_N).where(_N.c.id.in_(checks)).values(check_at=None))
            if always:
                conn.execute(sa.update(_N).where(_N.c.id.in_(always)).values(push_at=None))
            undelivered = [r for r in rows if r.id in checks
                           and r.delivered_at is None and r.read_at is None]
            to_push = [r for r in undelivered if r.push == "auto"]
            to_push += [r for r in rows if r.id in always]
            if to_push and self._sender is not None:
                self._queue_sends(conn, to_push, now)
        metrics.dispatch_write()
        again = [(r.user_id, notification_payload(r.id, r.type, r.title, r.body, r.data,
                                                  r.created_at)) for r in undelivered]
        return len(rows), again

    def _queue_sends(self, conn: sa.Connection, rows: list[sa.Row], now: datetime) -> None:
        users = {r.user_id for r in rows}
        subs = conn.execute(sa.select(_SUBS.c.id, _SUBS.c.user_id)
                            .where(_SUBS.c.user_id.in_(users))).all()
        by_user: dict[str, list[int]] = {}
        for sub in subs:
            by_user.setdefault(sub.user_id, []).append(sub.id)
        ttl = timedelta(seconds=self._settings.push_ttl)
        sends = [{"notification_id": r.id, "subscription_id": sub_id, "due_at": now,
                  "expires_at": r.created_at + ttl, "attempts": 0}
                 for r in rows for sub_id in by_user.get(r.user_id, ())]
        if sends:
            conn.execute(sa.insert(_SENDS), sends)


def _due_ids(conn: sa.Connection, column: sa.Column, now: datetime, limit: int) -> set[int]:
    """Ids of rows due by ``now``, locked for this transaction; rows another node has
    locked are skipped (PostgreSQL; SQLite's one writer needs no lock)."""
    table = column.table
    query = (sa.select(table.c.id).where(column <= now).order_by(column).limit(limit)
             .with_for_update(skip_locked=True))
    return set(conn.execute(query).scalars())
