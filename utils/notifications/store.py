"""The notification store: every query the service makes (models.py has the tables)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import defer

from utils.db.sqlite_locks import retry_when_locked
from utils.extensions import db
from utils.notifications.models import (
    IdempotencyKey,
    InsertedNotification,
    NewNotification,
    Notification,
    Watermark,
    utcnow,
)

# The table, not the entity: skips the ORM bulk path. Built once: its cache key is too.
_INSERT_RETURNING_IDS = sa.insert(Notification.__table__).returning(
    Notification.__table__.c.id, sort_by_parameter_order=True)


def insert_notifications(conn: sa.Connection, items: Sequence[NewNotification],
                         check_after: timedelta) -> list[InsertedNotification]:
    """One executemany INSERT ... RETURNING id for the batch on ``conn``, ids in the
    items' order; the caller commits. Each row's delivery check falls due
    ``check_after`` from now, and a push "always" row's push at once. Core on a
    connection rather than ORM objects or the session's execute path: for one row
    that path cost more than the INSERT, for a batch of 1,000 the unit of work about
    twice the insert (docs/BENCHMARKS.md)."""
    if not items:
        return []
    now = utcnow()
    check_at = now + check_after
    params = [{"user_id": item.user_id, "type": item.type, "title": item.title,
               "body": item.body, "data": item.data, "created_at": now,
               "check_at": None if item.seen else check_at,
               "push_at": now if item.push == "always" else None,
               "push": item.push, "push_urgency": item.urgency, "push_topic": item.topic,
               "critical": item.critical, "collapse_key": item.collapse_key,
               "collapse_template": item.collapse_template,
               "read_at": now if item.seen else None,
               "delivered_at": now if item.seen else None}
              for item in items]
    ids = conn.execute(_INSERT_RETURNING_IDS, params).scalars().all()
    return [InsertedNotification(id_, item.user_id, item.type, item.title, item.body,
                                 item.data, now) for id_, item in zip(ids, items, strict=True)]


# PostgreSQL, for large batches: one array per column, so the SQL text is the same for
# any number of rows. pg8000 rewrites a statement's text from its parameter style in
# pure Python on every execute; for a multi-row INSERT ... VALUES that rewrite grew with
# the batch and took 19% of the worker in the outbox bench (docs/BENCHMARKS.md).
_INSERT_UNNEST = sa.text("""
    INSERT INTO notifications (user_id, type, title, body, data, created_at, check_at,
                               push_at, push, push_urgency, push_topic, critical,
                               collapse_key, collapse_template, read_at, delivered_at)
    SELECT r.user_id, r.type, r.title, r.body, CAST(r.data AS json), :now,
           CASE WHEN NOT r.seen THEN CAST(:check_at AS timestamp) END,
           CASE WHEN r.push = 'always' THEN CAST(:now AS timestamp) END,
           r.push, r.urgency, r.topic, r.critical, r.collapse_key, r.collapse_template,
           CASE WHEN r.seen THEN CAST(:now AS timestamp) END,
           CASE WHEN r.seen THEN CAST(:now AS timestamp) END
    FROM unnest(CAST(:user_ids AS varchar[]), CAST(:types AS varchar[]),
                CAST(:titles AS varchar[]), CAST(:bodies AS text[]),
                CAST(:datas AS text[]), CAST(:pushes AS varchar[]),
                CAST(:urgencies AS varchar[]), CAST(:topics AS varchar[]),
                CAST(:criticals AS boolean[]), CAST(:collapse_keys AS varchar[]),
                CAST(:collapse_templates AS varchar[]), CAST(:seens AS boolean[]))
         WITH ORDINALITY AS r(user_id, type, title, body, data, push, urgency, topic,
                              critical, collapse_key, collapse_template, seen, n)
    ORDER BY r.n
    RETURNING id""")


def insert_notifications_unnest(conn: sa.Connection, items: Sequence[NewNotification],
                                check_after: timedelta) -> list[InsertedNotification]:
    """``insert_notifications`` on PostgreSQL with one fixed SQL text (see
    _INSERT_UNNEST). The rows are inserted in the items' order, so their ids, drawn
    from the sequence as the rows are, ascend in that order."""
    if not items:
        return []
    now = utcnow()
    ids = sorted(conn.execute(_INSERT_UNNEST, {
        "now": now, "check_at": now + check_after,
        "user_ids": [i.user_id for i in items], "types": [i.type for i in items],
        "titles": [i.title for i in items], "bodies": [i.body for i in items],
        "datas": [json.dumps(i.data) for i in items],  # as the JSON column writes it
        "pushes": [i.push for i in items], "urgencies": [i.urgency for i in items],
        "topics": [i.topic for i in items], "criticals": [i.critical for i in items],
        "collapse_keys": [i.collapse_key for i in items],
        "collapse_templates": [i.collapse_template for i in items],
        "seens": [i.seen for i in items]}).scalars())
    return [InsertedNotification(id_, item.user_id, item.type, item.title, item.body,
                                 item.data, now) for id_, item in zip(ids, items, strict=True)]


_NOTIFICATIONS = Notification.__table__
# Built once, with the user as a bound parameter: building the statement per call
# (coercions, its cache key) cost more than running it.
_UNREAD_COUNT = sa.select(sa.func.count()).select_from(_NOTIFICATIONS).where(
    _NOTIFICATIONS.c.user_id == sa.bindparam("user_id"), _NOTIFICATIONS.c.read_at.is_(None))


def unread_count(user_id: str, conn: sa.Connection | None = None) -> int:
    """In ``conn``, or else in the session's transaction (what a page read with it
    sees). Either way a connection, not the ORM execute path, which cost as much again."""
    if conn is None:
        if db.session.new or db.session.dirty or db.session.deleted:
            db.session.flush()  # what session.execute's autoflush would have done
        conn = db.session.connection()
    return int(conn.execute(_UNREAD_COUNT, {"user_id": user_id}).scalar_one())


def after(user_id: str, after_id: int, limit: int,
          lazy_data: bool = False) -> tuple[list[Notification], bool]:
    """Oldest first, ids greater than ``after_id``; the flag says more remain. With
    ``lazy_data`` each row's ``data`` loads on first access, on its own, so one row
    whose data cannot be decoded does not fail the page."""
    query = (
        sa.select(Notification)
        .where(Notification.user_id == user_id, Notification.id > after_id)
        .order_by(Notification.id.asc())
        .limit(limit + 1)
    )
    if lazy_data:
        query = query.options(defer(Notification.data))
    rows = list(db.session.execute(query).scalars())
    return rows[:limit], len(rows) > limit


def page(
    user_id: str, before: int | None, limit: int, unread_only: bool
) -> tuple[list[Notification], int | None]:
    """Newest first; returns the rows and the cursor for the next page, if any."""
    query = sa.select(Notification).where(Notification.user_id == user_id)
    if before is not None:
        query = query.where(Notification.id < before)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    query = query.order_by(Notification.id.desc()).limit(limit + 1)
    rows = list(db.session.execute(query).scalars())
    has_more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if has_more and rows else None)


def mark_read(user_id: str, ids: Iterable[int] | None) -> int:
    """Mark the user's notifications read (all of them when ``ids`` is None). Read
    implies delivered: its delivery check is over."""
    stmt = sa.update(Notification).where(
        Notification.user_id == user_id, Notification.read_at.is_(None)
    )
    params: dict[str, Any] = {}
    if ids is not None:
        id_list = list(ids)
        if not id_list:
            return 0
        dialect = db.engine.dialect.name
        stmt = stmt.where(_AMONG_IDS[dialect])
        params["ids"] = id_list_param(dialect, id_list)
    return _commit_mark_read(stmt, params)


@retry_when_locked
def _commit_mark_read(stmt: sa.Update, params: dict[str, Any]) -> int:
    now = utcnow()
    result = db.session.execute(stmt.values(
        read_at=now, delivered_at=sa.func.coalesce(Notification.delivered_at, now),
        check_at=None), params)
    db.session.commit()
    return int(result.rowcount or 0)


# A list of ids goes to the database as one parameter, never one per id. An IN list
# of N parameters is another SQL text for every N, and sqlite3 keeps each pooled
# connection's last 128 prepared statements, each sized by its parameter count: a
# receipt flood (lists of 1 to 20,000 ids) took one connection from 111 to 371 MB,
# never released. One text per dialect: PostgreSQL takes an array (ANY, by the
# primary key's index), SQLite a JSON array read by json_each (a rowid search each).
_EACH_ID = sa.func.json_each(sa.bindparam("ids")).table_valued("value")
_AMONG_IDS = {
    "postgresql": _NOTIFICATIONS.c.id == sa.any_(sa.cast(sa.bindparam("ids"),
                                                           ARRAY(sa.BigInteger))),
    "sqlite": _NOTIFICATIONS.c.id.in_(sa.select(_EACH_ID.c.value)),
}


def id_list_param(dialect: str, ids: list[int]) -> list[int] | str:
    """The ``ids`` parameter of an ``_AMONG_IDS`` clause."""
    return ids if dialect == "postgresql" else json.dumps(ids)


# A group of receipts is one UPDATE ... FROM a list of (id, user) pairs, whatever
# the users: each pair marks its id only if that user owns it. PostgreSQL takes two
# arrays, unnested side by side; SQLite a JSON array of [id, user] pairs read by
# json_each. One statement per group, not one per user: a group of 30 receipts from
# 30 users cost 30 statements, each more Python than SQL.
_PAIRS = {
    "postgresql": sa.func.unnest(
        sa.cast(sa.bindparam("ids"), ARRAY(sa.BigInteger)),
        sa.cast(sa.bindparam("uids"), ARRAY(sa.String)),
    ).table_valued(sa.column("id", sa.BigInteger), sa.column("user_id", sa.String))
    .render_derived(name="receipt"),
}
_EACH_PAIR = sa.func.json_each(sa.bindparam("pairs")).table_valued("value")
_PAIRS["sqlite"] = sa.select(
    sa.func.json_extract(_EACH_PAIR.c.value, sa.literal_column("'$[0]'")).label("id"),
    sa.func.json_extract(_EACH_PAIR.c.value, sa.literal_column("'$[1]'")).label("user_id"),
).subquery("receipt")
_MARK_DELIVERED = {
    dialect: sa.update(_NOTIFICATIONS)
    .where(_NOTIFICATIONS.c.id == pairs.c.id, _NOTIFICATIONS.c.user_id == pairs.c.user_id,
           _NOTIFICATIONS.c.delivered_at.is_(None))
    .values(delivered_at=sa.bindparam("now"), check_at=None)
    .returning(_NOTIFICATIONS.c.id, _NOTIFICATIONS.c.user_id)
    for dialect, pairs in _PAIRS.items()}


def mark_delivered(conn: sa.Connection,
                   wanted: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
    """Record a first receipt for each user's notifications among their ids in
    ``wanted`` (user -> ids), in ``conn``'s transaction, in one statement; returns,
    per user of ``wanted``, the ids marked now (not those marked before, nor another
    user's). Their delivery check is over."""
    marked: dict[str, set[int]] = {user: set() for user in wanted}
    pairs = [(id_, user) for user, ids in wanted.items() for id_ in set(ids)]
    if not pairs:
        return marked
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {"ids": [p[0] for p in pairs], "uids": [p[1] for p in pairs]}
    else:
        params = {"pairs": json.dumps(pairs)}
    for id_, user in conn.execute(_MARK_DELIVERED[conn.dialect.name],
                                  {**params, "now": utcnow()}):
        marked[user].add(id_)
    return marked


_KEYS = IdempotencyKey.__table__
_FIND_KEY = sa.select(_KEYS.c.fingerprint, _KEYS.c.response, _KEYS.c.created_at).where(
    _KEYS.c.key == sa.bindparam("key"))
_DELETE_KEY = sa.delete(_KEYS).where(_KEYS.c.key == sa.bindparam("key"))


def find_idempotency_key(conn: sa.Connection, key: str,
                         max_age: timedelta) -> sa.Row | None:
    """The key's row (``fingerprint``, ``response``), or None; an expired one is deleted
    in ``conn``'s transaction."""
    row = conn.execute(_FIND_KEY, {"key": key}).first()
    if row is not None and row.created_at < utcnow() - max_age:
        conn.execute(_DELETE_KEY, {"key": key})
        return None
    return row


def record_idempotency_keys(conn: sa.Connection, keys: list[dict]) -> None:
    """Insert ``{"key", "fingerprint", "response"}`` rows in ``conn``'s transaction; a
    key already there raises IntegrityError."""
    if keys:
        now = utcnow()
        conn.execute(sa.insert(_KEYS), [{**k, "created_at": now} for k in keys])


def pruned_through() -> int:
    row = db.session.get(Watermark, "pruned_through")
    return int(row.value) if row else 0


@retry_when_locked
def prune(older_than: timedelta, idempotency_ttl: timedelta) -> int:
    """Delete notifications older than ``older_than``; remember the highest id removed.
    One transaction, run again whole while SQLite is locked."""
    cutoff = utcnow() - older_than
    highest = db.session.execute(
        sa.select(sa.func.max(Notification.id)).where(Notification.created_at < cutoff)
    ).scalar_one()
    deleted = 0
    if highest is not None:
        deleted = db.session.execute(
            sa.delete(Notification).where(Notification.created_at < cutoff)
        ).rowcount or 0
        mark = db.session.get(Watermark, "pruned_through")
        if mark is None:
            db.session.add(Watermark(name="pruned_through", value=int(highest)))
        elif mark.value < highest:
            mark.value = int(highest)
    db.session.execute(
        sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - idempotency_ttl)
    )
    db.session.commit()
    return int(deleted)
