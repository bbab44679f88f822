"""Delivery checks: each notification is stored with a check due PUSH_AFTER later
(``check_at``); a receipt or a read clears it. When a check falls due and the
notification is still neither delivered nor read, it is emitted again to the user's
sockets (closing the gap of a node that died between commit and publish: clients
deduplicate by id) and, with push "auto", a push is queued to each of the user's
subscriptions (utils/push/sends.py sends them). Push "always" queues them at once
(``push_at``).

When pushes are queued, the recipients' preferences decide when they go:
- a subscription its user turned off gets none;
- unless the notification is critical, a push that falls due inside the user's quiet
  hours waits for the window's end (``deferred``);
- pushes with one ``collapse_key`` fold: per subscription at most one waits unclaimed
  (PUSH_COLLAPSE_SECONDS, or the quiet hours' end when later), and each later one only
  points it at the newest notification and counts one more (``folded``).
A deferred push whose notification was delivered or read by its due time is dropped
then (utils/push/sends.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from utils import protocol
from utils.config import Settings
from utils.db.sqlite_locks import retry_when_locked
from utils.extensions import db, socketio
from utils.notifications import preferences
from utils.notifications.models import Notification, notification_payload, utcnow
from utils.ops import metrics
from utils.push.models import PushSend, PushSubscription
from utils.push.sender import Sender

CHECK_BATCH = 500

_N = Notification.__table__
_SENDS = PushSend.__table__
_SUBS = PushSubscription.__table__


def utc_wall_clock() -> datetime:
    """The real time of day, aware (UTC)."""
    return datetime.now(UTC)


class DeliveryChecks:
    """Claims due checks and "always" pushes, emits again, queues pushes."""

    def __init__(self, settings: Settings, sender: Sender | None,
                 wall_clock: Callable[[], datetime] = utc_wall_clock) -> None:
        self._settings = settings
        self._sender = sender
        # What quiet hours read the time of day from (aware); tests set it. Only its
        # distance to a window's end counts: due times stay on the database's clock.
        self.wall_clock = wall_clock

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
                _N.c.created_at, _N.c.read_at, _N.c.delivered_at, _N.c.push, _N.c.critical,
                _N.c.collapse_key,
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
        """Pushes of ``rows`` (notifications) to each enabled subscription of their
        users: at once, at the end of the user's quiet window (deferred), or folded
        by collapse_key."""
        users = {r.user_id for r in rows}
        subs = conn.execute(sa.select(_SUBS.c.id, _SUBS.c.user_id).where(
            _SUBS.c.user_id.in_(users), _SUBS.c.enabled.is_(True))).all()
        by_user: dict[str, list[int]] = {}
        for sub in subs:
            by_user.setdefault(sub.user_id, []).append(sub.id)
        rows = [r for r in rows if r.user_id in by_user]
        if not rows:
            return
        quiet = self._quiet_ends(conn, {r.user_id for r in rows if not r.critical}, now)
        ttl = timedelta(seconds=self._settings.push_ttl)
        sends, groups = [], {}
        for r in rows:
            if r.collapse_key:
                groups.setdefault((r.user_id, r.collapse_key), []).append(r)
                continue
            held = None if r.critical else quiet.get(r.user_id)
            sends += [{"notification_id": r.id, "subscription_id": sub_id,
                       "due_at": held or now, "expires_at": r.created_at + ttl,
                       "attempts": 0, "deferred": held is not None}
                      for sub_id in by_user[r.user_id]]
        if sends:
            conn.execute(sa.insert(_SENDS), sends)
        if groups:
            self._fold(conn, groups, by_user, quiet, now)

    def _quiet_ends(self, conn: sa.Connection, users: set[str],
                    now: datetime) -> dict[str, datetime]:
        """For each of ``users`` inside one of their quiet windows, when it ends, on the
        database's clock (``now``: naive UTC). Their preferences in one query."""
        chosen = preferences.of_users(conn, users) if users else {}
        ends: dict[str, datetime] = {}
        wall = None
        for user_id, prefs in chosen.items():
            if not prefs.quiet_hours:
                continue
            if wall is None:
                wall = self.wall_clock()
                if wall.tzinfo is None:
                    wall = wall.replace(tzinfo=UTC)
            end = prefs.quiet_until(wall)
            if end is not None:
                ends[user_id] = now + (end - wall)
        return ends

    def _fold(self, conn: sa.Connection, groups: dict[tuple[str, str], list[sa.Row]],
              by_user: dict[str, list[int]], quiet: dict[str, datetime],
              now: datetime) -> None:
        """Per subscription and collapse_key, one push waiting: an unclaimed one
        (attempts 0) is pointed at the newest notification and counts the new ones in
        ``folded``, keeping its due time (a critical one brings it forward to the
        collapse window's end); else one is queued for PUSH_COLLAPSE_SECONDS from now,
        or the quiet window's end when that is later."""
        _lock_collapse_keys(conn, groups)
        sub_ids = [sub_id for user_id, _ in groups for sub_id in by_user[user_id]]
        waiting = {}
        for p in conn.execute(sa.select(
                _SENDS.c.id, _SENDS.c.subscription_id, _SENDS.c.collapse_key,
                _SENDS.c.notification_id, _SENDS.c.folded, _SENDS.c.due_at,
                _SENDS.c.expires_at,
        ).where(_SENDS.c.subscription_id.in_(sub_ids),
                _SENDS.c.collapse_key.in_({key for _, key in groups}),
                _SENDS.c.attempts == 0).order_by(_SENDS.c.id).with_for_update()):
            waiting.setdefault((p.subscription_id, p.collapse_key), p)
        window = now + timedelta(seconds=self._settings.push_collapse_seconds)
        ttl = timedelta(seconds=self._settings.push_ttl)
        updates, inserts = [], []
        for (user_id, key), group in groups.items():
            newest = max(group, key=lambda r: r.id)
            critical = any(r.critical for r in group)
            held = None if critical else quiet.get(user_id)
            expires = newest.created_at + ttl
            for sub_id in by_user[user_id]:
                pending = waiting.get((sub_id, key))
                if pending is not None:
                    updates.append({
                        "send_id": pending.id,
                        "newest": max(pending.notification_id, newest.id),
                        "folded": pending.folded + len(group),
                        "due": min(pending.due_at, window) if critical else pending.due_at,
                        "expires": max(pending.expires_at, expires)})
                else:
                    inserts.append({"notification_id": newest.id, "subscription_id": sub_id,
                                    "due_at": max(window, held or now),
                                    "expires_at": expires, "attempts": 0, "deferred": True,
                                    "collapse_key": key, "folded": len(group) - 1})
        if updates:
            conn.execute(sa.update(_SENDS).where(_SENDS.c.id == sa.bindparam("send_id"))
                         .values(notification_id=sa.bindparam("newest"),
                                 folded=sa.bindparam("folded"), due_at=sa.bindparam("due"),
                                 expires_at=sa.bindparam("expires")), updates)
        if inserts:
            conn.execute(sa.insert(_SENDS), inserts)


def _lock_collapse_keys(conn: sa.Connection, groups: Iterable[tuple[str, str]]) -> None:
    """On PostgreSQL, a transaction lock for each (user, collapse_key), taken in one
    order: two nodes folding one user's key take turns, so neither queues a second
    push beside the other's. SQLite has one writer at a time already."""
    if conn.dialect.name != "postgresql":
        return
    locks = sorted({int.from_bytes(hashlib.sha256(f"{user_id}\n{key}".encode()).digest()[:8],
                                   "big", signed=True) for user_id, key in groups})
    conn.execute(sa.text("SELECT count(*) FROM (SELECT pg_advisory_xact_lock(k) FROM "
                         "unnest(CAST(:locks AS bigint[])) AS t(k)) AS locked"),
                 {"locks": locks}).scalar()


def _due_ids(conn: sa.Connection, column: sa.Column, now: datetime, limit: int) -> set[int]:
    """Ids of rows due by ``now``, locked for this transaction; rows another node has
    locked are skipped (PostgreSQL; SQLite's one writer needs no lock)."""
    table = column.table
    query = (sa.select(table.c.id).where(column <= now).order_by(column).limit(limit)
             .with_for_update(skip_locked=True))
    return set(conn.execute(query).scalars())
