"""One batch of the outbox: claim committed rows, validate each, store the valid ones
as notifications, move the others to ``notification_outbox_dead``; the caller emits
what was stored once the transaction has committed.

The claim deletes the rows it takes (``DELETE ... WHERE id IN (SELECT ... FOR UPDATE
SKIP LOCKED)``): the delete commits with the stores, or rolls back with them, and
another node's claim skips the rows this one holds instead of waiting for them.

Two ways to store, by where the outbox lives:
- in the notifier's own database: the notifications are inserted in the claim's
  transaction. One commit stores them and removes the rows: exactly once without
  idempotency keys.
- in another database (OUTBOX_DATABASE_URL): the notifications are committed first,
  each row as one request with the idempotency key ``outbox:<database>:<id>``, then the
  claim commits. A crash between the two commits leaves the rows to be claimed again,
  and their keys answer with the first store's result: stored once, emitted once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from utils.errors import ValidationError
from utils.notifications import store
from utils.notifications.models import InsertedNotification, NewNotification
from utils.notifications.notifier import (
    IdempotencyConflict,
    NotifyRequest,
    Stored,
    apply_preferences,
    fingerprint,
    new_notifications,
    store_group,
)
from utils.notifications.validation import NotificationRequest, notification_request

CHANNEL = "notification_outbox"  # the trigger's pg_notify channel (docs/outbox.sql)
MAX_ERROR = 1000  # characters of an error kept with a dead row

# Oldest first; the rows another node holds are skipped, not waited for.
_CLAIM = sa.text(
    "DELETE FROM notification_outbox WHERE id IN ("
    " SELECT id FROM notification_outbox ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " RETURNING id, payload, created_at")
_CLAIM_ONE = sa.text(
    "DELETE FROM notification_outbox WHERE id = ("
    " SELECT id FROM notification_outbox ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, payload, created_at")
_BURY = sa.text(
    "INSERT INTO notification_outbox_dead (id, payload, error, created_at)"
    " VALUES (:id, CAST(:payload AS jsonb), :error, :created_at)"
    " ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, error = EXCLUDED.error,"
    " created_at = EXCLUDED.created_at, dead_at = now()")
# By the primary key's index, not min(created_at) over the table.
_OLDEST_AGE = sa.text(
    "SELECT EXTRACT(EPOCH FROM clock_timestamp() - created_at) FROM notification_outbox"
    " ORDER BY id LIMIT 1")


@dataclass(frozen=True)
class Row:
    id: int
    payload: Any
    created_at: datetime


@dataclass
class Batch:
    """What one transaction did: ``emits`` are (user_id, payload) to send once it
    has committed, in the rows' order."""

    claimed: int = 0
    consumed: int = 0  # rows stored as notifications
    dead: list[tuple[Row, str]] = field(default_factory=list)
    emits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    push_now: bool = False  # a push "always" was stored: wake the dispatcher
    stored: int = 0  # notifications this transaction inserted


def claim(conn: sa.Connection, limit: int) -> list[Row]:
    """Take up to ``limit`` of the oldest committed rows no other transaction holds,
    deleting them in ``conn``'s transaction; ordered by id."""
    statement = _CLAIM_ONE if limit == 1 else _CLAIM
    rows = conn.execute(statement, {"limit": limit}).all()
    return sorted((Row(r[0], r[1], r[2]) for r in rows), key=lambda r: r.id)


def validate(rows: list[Row]) -> tuple[list[tuple[Row, NotificationRequest]],
                                        list[tuple[Row, str]]]:
    """The rows whose payload is what POST /api/notifications takes, with the parsed
    request, and the others with their error."""
    good: list[tuple[Row, NotificationRequest]] = []
    bad: list[tuple[Row, str]] = []
    for row in rows:
        try:
            good.append((row, notification_request(row.payload)))
        except ValidationError as exc:
            bad.append((row, exc.message))
        except Exception as exc:  # never expected; a row must not block the rest
            bad.append((row, f"{type(exc).__name__}: {exc}"[:MAX_ERROR]))
    return good, bad


def bury(conn: sa.Connection, dead: list[tuple[Row, str]]) -> None:
    """Move refused rows (already deleted by their claim) to the dead-letter table."""
    if dead:
        conn.execute(_BURY, [{"id": row.id, "payload": _json(row.payload),
                              "error": error[:MAX_ERROR], "created_at": row.created_at}
                             for row, error in dead])


def oldest_age(conn: sa.Connection) -> float:
    """Seconds since the oldest row still in the outbox was written; 0 when empty."""
    age = conn.execute(_OLDEST_AGE).scalar()
    return float(age) if age is not None else 0.0


def consume_here(conn: sa.Connection, limit: int, check_after: timedelta) -> Batch:
    """The outbox in the notifier's own database: claim, store, bury in ``conn``'s
    one transaction (the caller commits, then emits)."""
    rows = claim(conn, limit)
    good, bad = validate(rows)
    batch = Batch(claimed=len(rows))
    try:
        with conn.begin_nested():  # the usual case: the batch in one INSERT
            requests = [request for _, request in good]
            stored = list(zip(requests, _insert(conn, requests, check_after), strict=True))
    except DBAPIError as exc:
        if not refused_by_data(exc):
            raise
        # A row validation let through but the database refuses: each row alone, in
        # a savepoint of its own, and the one that fails is dead-lettered.
        stored = []
        for row, request in good:
            try:
                with conn.begin_nested():
                    stored.append((request, _insert(conn, [request], check_after)[0]))
            except DBAPIError as one:
                if not refused_by_data(one):
                    raise
                bad.append((row, _refused(one)))
    for _, inserted in stored:
        for item, row in inserted:
            if row is not None and not item.seen:
                batch.emits.append((row.user_id, row.to_dict()))
            batch.push_now |= item is not None and item.push == "always"
            batch.stored += row is not None
    batch.consumed = len(stored)
    batch.dead = bad
    bury(conn, bad)
    return batch


def _insert(conn: sa.Connection, requests: list[NotificationRequest], check_after: timedelta
            ) -> list[list[tuple[NewNotification, InsertedNotification | None]]]:
    """Every request's notifications, as their recipients' preferences have them, in
    one INSERT; each request's rows in order, with None for a row not stored."""
    decisions = apply_preferences(conn, [item for request in requests
                                         for item in new_notifications(request)])
    kept = [d.item for d in decisions if d.item is not None]
    rows = iter(store.insert_notifications_unnest(conn, kept, check_after))
    pairs = [(d.item, next(rows)) if d.item is not None else (None, None) for d in decisions]
    inserted, at = [], 0
    for request in requests:
        inserted.append(pairs[at:at + len(request.user_ids)])
        at += len(request.user_ids)
    return inserted


def consume_elsewhere(conn: sa.Connection, limit: int, database_tag: str) -> Batch:
    """The outbox in another database: claim in ``conn`` (the outbox's), store in the
    notifier's database under each row's idempotency key (committed there), bury in
    ``conn``; the caller commits ``conn``, then emits."""
    rows = claim(conn, limit)
    good, bad = validate(rows)
    batch = Batch(claimed=len(rows))
    requests = [NotifyRequest(new_notifications(request), idempotency_key(database_tag, row.id),
                              fingerprint(row.payload))
                for row, request in good]
    try:
        outcomes: list[Stored | Exception] = store_group(requests) if requests else []
    except DBAPIError as exc:
        if not refused_by_data(exc):
            raise
        outcomes = []  # each row alone: the one the database refuses is dead-lettered
        for one in requests:
            try:
                outcomes.extend(store_group([one]))
            except DBAPIError as refused:
                if not refused_by_data(refused):
                    raise
                outcomes.append(refused)
    for (row, request), outcome in zip(good, outcomes, strict=True):
        if isinstance(outcome, Stored):
            batch.consumed += 1
            # None on a replay: stored before, it reaches its user by replay or redelivery.
            if outcome.payloads:
                batch.emits.extend((user, payload) for user, payload
                                   in zip(request.user_ids, outcome.payloads, strict=True)
                                   if payload is not None)
                batch.push_now |= outcome.push_now
        elif isinstance(outcome, IdempotencyConflict):
            bad.append((row, f"idempotency key {idempotency_key(database_tag, row.id)} "
                             "was used by another payload"))
        else:
            bad.append((row, _refused(outcome)))
    batch.dead = bad
    bury(conn, bad)
    return batch


def refused_by_data(exc: DBAPIError) -> bool:
    """The database refused the rows themselves (SQLSTATE class 22, data exception;
    23, integrity; 54, a limit exceeded), not the connection or the schema: storing
    them again would fail again."""
    if exc.connection_invalidated:
        return False
    return _sqlstate(exc.orig)[:2] in ("22", "23", "54")


def _sqlstate(error: BaseException | None) -> str:
    detail = error.args[0] if error is not None and error.args else None
    if isinstance(detail, dict):  # pg8000: the server's error fields, C the SQLSTATE
        return str(detail.get("C", ""))
    return str(getattr(error, "sqlstate", None) or getattr(error, "pgcode", None) or "")


def _refused(exc: Exception) -> str:
    return f"could not be stored: {describe(exc)}"


def describe(exc: BaseException) -> str:
    """An error in one line for a log or a dead row: the server's SQLSTATE and message,
    never SQLAlchemy's rendering, which carries the statement and its values (payloads)."""
    orig = getattr(exc, "orig", None)
    detail = orig.args[0] if orig is not None and orig.args else None
    if isinstance(detail, dict):  # pg8000: the server's error fields
        return f"{detail.get('C', '')} {detail.get('M', '')}".strip()
    if isinstance(exc, DBAPIError):
        return f"{type(exc).__name__}: {type(orig).__name__}: {str(orig)[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def idempotency_key(database_tag: str, row_id: int) -> str:
    return f"outbox:{database_tag}:{row_id}"


def database_tag(url: sa.URL) -> str:
    """Names the outbox's database in idempotency keys (ids restart in another one):
    a short digest of host, port and database name, never of the credentials."""
    where = f"{url.host or ''}:{url.port or 5432}/{url.database or ''}"
    return hashlib.sha256(where.encode()).hexdigest()[:12]


def _json(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
