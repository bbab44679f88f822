"""The one path that stores notifications and then emits them."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from utils import protocol
from utils.db.group_commit import GroupCommit
from utils.db.sqlite_locks import retry_when_locked
from utils.extensions import db, socketio
from utils.notifications import preferences, store
from utils.notifications.models import InsertedNotification, NewNotification
from utils.notifications.validation import NotificationRequest
from utils.ops import metrics
from utils.services import services

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL = timedelta(hours=24)


class IdempotencyConflict(Exception):
    """An Idempotency-Key reused with a different request body."""


@dataclass(frozen=True)
class Delivery:
    response: dict[str, Any]
    replayed: bool  # True when an Idempotency-Key matched an earlier request


def fingerprint(payload: Any, scope: str = "") -> str:
    """A request body's digest, compared when its Idempotency-Key comes again. A
    ``scope`` other than the single route's (``BULK``) is hashed with the body, so a key
    used on one route and then on another is a conflict, never a replay of the other
    route's answer in the wrong shape."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    if scope:
        canonical = scope + "\n" + canonical
    return hashlib.sha256(canonical.encode()).hexdigest()


#: The scope of POST /api/notifications/bulk's fingerprints.
BULK = "bulk"


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


@dataclass(frozen=True)
class NotifyRequest:
    """One producer request's write: its notifications and its idempotency key.

    ``counts`` is None for one notification object (POST /api/notifications: the answer
    is ``{"notifications": [...]}``). A bulk request carries several objects: ``items``
    holds their rows one object after another, ``counts`` how many rows each object has,
    and the answer is ``{"results": [{"notifications": [...]}, ...]}``, one per object."""

    items: list[NewNotification]
    idempotency_key: str | None
    fingerprint: str
    counts: tuple[int, ...] | None = None

    @classmethod
    def bulk(cls, objects: Sequence[NotificationRequest], idempotency_key: str | None,
             request_fingerprint: str) -> NotifyRequest:
        items = [item for o in objects for item in new_notifications(o, resolve=False)]
        if any(o.push == IF_OFFLINE for o in objects):
            items = resolve_if_offline(items)
        return cls(items, idempotency_key, request_fingerprint,
                   tuple(len(o.user_ids) for o in objects))


def new_notifications(request: NotificationRequest, resolve: bool = True
                      ) -> list[NewNotification]:
    """One row to store per recipient of ``request``; push "if_offline" resolved (one
    presence lookup) unless ``resolve`` is False (the caller resolves many at once)."""
    items = [NewNotification(user, request.type, request.title, request.body, request.data,
                             request.push, request.urgency, request.topic, request.critical,
                             request.collapse_key, request.collapse_template)
             for user in request.user_ids]
    if resolve and request.push == IF_OFFLINE:
        items = resolve_if_offline(items)
    return items


@dataclass(frozen=True)
class Stored:
    delivery: Delivery
    # What to emit, in the items' order: None for an item not emitted (muted, or stored
    # already seen); empty on a replay.
    payloads: list[dict[str, Any] | None]
    push_now: bool = False  # a stored row's push is "always": wake the dispatcher


def notify_users(user_ids: Iterable[str], type: str, title: str, body: str | None = None,
                 data: dict[str, Any] | None = None, idempotency_key: str | None = None,
                 request_fingerprint: str | None = None, **options: Any) -> Delivery:
    """notify() for one notification to each of ``user_ids``; ``options`` are the
    request's others (push, urgency, topic, critical, collapse_key, ...)."""
    request = NotificationRequest([str(u) for u in user_ids], type, title, body, data or {},
                                  **options)
    return notify(request, idempotency_key, request_fingerprint)


def notify(request: NotificationRequest, idempotency_key: str | None = None,
           request_fingerprint: str | None = None) -> Delivery:
    """Store one notification per recipient, then emit each to its user's room. The
    write is durable before the first emit; requests arriving together share one
    transaction (utils/db/group_commit.py). With an idempotency key, a repeat returns
    the first answer. The recipients' preferences are applied in that transaction
    (apply_preferences). ``push`` says when Web Push follows (utils/push/dispatcher.py):
    "auto" when no receipt comes within PUSH_AFTER, "always" at once, "never" not at
    all, "if_offline" at once for each user with no live socket anywhere and never
    for the others (resolve_if_offline)."""
    started = metrics.producer_started()
    items = new_notifications(request)
    stored = writes().submit(NotifyRequest(items, idempotency_key, request_fingerprint or ""),
                             weight=len(items))
    emit_stored(items, stored, started)
    return stored.delivery


IF_OFFLINE = "if_offline"


def resolve_if_offline(items: list[NewNotification]) -> list[NewNotification]:
    """Each item whose push is "if_offline", resolved now for its user: "always" when
    the user has no live socket on any node, "never" when they have one (presence:
    utils/realtime/presence.py, through ``services().presence``). When presence cannot
    say (Redis failed), "auto": pushed only if no device acknowledges it within
    PUSH_AFTER. Only "auto", "always" and "never" are ever stored. One presence lookup
    for all the items' users."""
    asked = list(dict.fromkeys(item.user_id for item in items if item.push == IF_OFFLINE))
    if not asked:
        return items
    try:
        online = services().presence.online(asked)  # None: unknown (logged there)
    except Exception:  # never expected: a send must not fail for presence
        log.exception("presence lookup failed")
        online = None

    def mode(user_id: str) -> str:
        if online is None:
            return "auto"
        return "never" if user_id in online else "always"

    return [replace(item, push=mode(item.user_id)) if item.push == IF_OFFLINE else item
            for item in items]


def notify_many(
    objects: Sequence[NotificationRequest],
    idempotency_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Delivery:
    """Store several notification objects (each what POST /api/notifications takes,
    validated: utils/notifications/validation.py) as one request, then emit each row to
    its user's room. All are written in one transaction of the group commit, and
    nothing is emitted before it commits. The answer is ``{"results": [...]}``, one
    ``{"notifications": [{"id", "user_id"}, ...]}`` per object, in order. One
    ``idempotency_key`` covers them all: a repeat with the same ``request_fingerprint``
    gets the first answer back (``replayed``) and stores and emits nothing; another
    fingerprint raises IdempotencyConflict."""
    started = metrics.producer_started()
    request = NotifyRequest.bulk(objects, idempotency_key, request_fingerprint or "")
    stored = writes().submit(request, weight=len(request.items))
    emit_stored(request.items, stored, started)
    return stored.delivery


def emit_stored(items: Sequence[NewNotification], stored: Stored,
                started: float | None = None) -> None:
    """After the commit: each emitted row to its user's room, in order, and the push
    dispatcher woken once when a row may push at once. Nothing on a replay."""
    if stored.delivery.replayed:
        return
    for item, payload in zip(items, stored.payloads, strict=True):
        if payload is not None:
            emit_notification(item.user_id, payload, started)
    if stored.push_now:
        wake_dispatcher()


@dataclass(frozen=True)
class Decision:
    """What the recipient's preferences make of one notification: the row to store
    (None: nothing is stored) and the channels they held back."""

    item: NewNotification | None
    muted: tuple[str, ...] = ()


def apply_preferences(conn: sa.Connection, items: Sequence[NewNotification]) -> list[Decision]:
    """Each item as its recipient's preferences have it, read in ``conn`` (one query for
    all the recipients):
    - ``critical``, or nothing muted: stored as it came;
    - muted on every channel, or in_app muted and push "never": not stored;
    - push muted: stored and emitted, never pushed (push "never");
    - in_app muted: stored already read (in the history, never counted unread nor
      emitted) and pushed at once, as no socket will acknowledge it."""
    users = {item.user_id for item in items if not item.critical}
    chosen = preferences.of_users(conn, users) if users else {}
    if not chosen:
        return [Decision(item) for item in items]
    decisions = []
    for item in items:
        prefs = None if item.critical else chosen.get(item.user_id)
        muted = tuple(prefs.muted(item.type)) if prefs else ()
        if not muted:
            decisions.append(Decision(item))
        elif muted == ("push",):
            decisions.append(Decision(replace(item, push="never"), muted))
        elif "push" in muted or item.push == "never":
            decisions.append(Decision(None, muted))
        else:  # in_app alone
            decisions.append(Decision(replace(item, seen=True, push="always"), muted))
    return decisions


def wake_dispatcher() -> None:
    """Pushes due now: run the dispatcher's pass without waiting for its next tick."""
    services().dispatcher.wake()


# Rows in one group's transaction: five full batch requests.
MAX_GROUP_ROWS = 5000


def writes() -> GroupCommit[NotifyRequest, Stored]:
    """This app's group committer for notifications."""
    return services().writes


@retry_when_locked
def store_group(requests: list[NotifyRequest]) -> list[Stored | Exception]:
    """One transaction for a group of requests: each keyed request's earlier answer is
    looked up, every new notification is inserted in one statement, each new key is
    recorded with its answer, and it all commits once. Run again whole when SQLite is
    locked (the key checks included: a duplicate may have committed meanwhile).

    On a connection of its own rather than through the ORM session: the session's
    bookkeeping cost more than the statements (docs/BENCHMARKS.md)."""
    try:
        with db.engine.begin() as conn:  # commits, or rolls back on any error
            outcomes = _write_group(conn, requests)
    except IntegrityError:
        # Alone, a request whose key a concurrent writer committed first gets that
        # writer's answer; in a group, GroupCommit runs each request alone next.
        if len(requests) == 1 and requests[0].idempotency_key:
            with db.engine.connect() as conn:
                earlier = _earlier(conn, requests[0].idempotency_key, requests[0].fingerprint)
            if earlier is not None:
                return [earlier]
        raise
    metrics.stored(sum(len(o.payloads) for o in outcomes if isinstance(o, Stored)))
    return outcomes


def write_requests(conn: sa.Connection,
                   requests: list[NotifyRequest]) -> list[Stored | Exception]:
    """``requests`` written in ``conn``'s transaction, which the caller commits (and
    only then emits, with emit_stored): each keyed request's earlier answer looked up,
    every new row inserted in one statement, each new key recorded with its answer.
    One outcome per request, in order; an outcome that is an exception (an
    IdempotencyConflict) belongs to that request alone. store_group runs it for the
    group commit; a caller with a transaction of its own (a consumer that removes what
    it consumed in the same transaction) may run it directly."""
    return _write_group(conn, requests)


def _write_group(conn: sa.Connection, requests: list[NotifyRequest]) -> list[Stored | Exception]:
    outcomes: list[Stored | Exception | None] = [None] * len(requests)
    first_with_key: dict[str, int] = {}  # a key repeated within the group
    fresh: list[int] = []
    for i, req in enumerate(requests):
        key = req.idempotency_key
        if key and key in first_with_key:
            continue  # answered from the first request with this key, below
        if key:
            first_with_key[key] = i
            earlier = _earlier(conn, key, req.fingerprint)
            if earlier is not None:
                outcomes[i] = earlier
                continue
        fresh.append(i)
    check_after = timedelta(seconds=services().settings.push_after)
    decisions = apply_preferences(conn, [item for i in fresh for item in requests[i].items])
    inserted = iter(store.insert_notifications(
        conn, [d.item for d in decisions if d.item is not None], check_after))
    rows = [next(inserted) if d.item is not None else None for d in decisions]
    keys, at = [], 0
    for i in fresh:
        req = requests[i]
        mine = list(zip(req.items, decisions[at:at + len(req.items)],
                        rows[at:at + len(req.items)], strict=True))
        at += len(req.items)
        payloads = [row.to_dict() if row is not None and not d.item.seen else None
                    for _, d, row in mine]
        response = _answer(mine) if req.counts is None else _bulk_answer(mine, req.counts)
        if req.idempotency_key:
            keys.append({"key": req.idempotency_key, "fingerprint": req.fingerprint,
                         "response": response})
        outcomes[i] = Stored(Delivery(response, replayed=False), payloads,
                             any(d.item is not None and d.item.push == "always"
                                 for _, d, _ in mine))
    store.record_idempotency_keys(conn, keys)
    for i, req in enumerate(requests):
        if outcomes[i] is None:  # a key seen earlier in this group
            outcomes[i] = _same_key(outcomes[first_with_key[req.idempotency_key]],
                                    requests[first_with_key[req.idempotency_key]], req)
    return outcomes  # type: ignore[return-value]


Outcome = tuple[NewNotification, Decision, InsertedNotification | None]


def _answer(rows: list[Outcome]) -> dict[str, Any]:
    return {"notifications": [answer_item(item.user_id, row.id if row else None, d.muted)
                              for item, d, row in rows]}


def answer_item(user_id: str, id: int | None, muted: Sequence[str]) -> dict[str, Any]:
    """One recipient in a producer's answer: the stored id (None when nothing was
    stored) and, when not empty, the channels their preferences held back."""
    item: dict[str, Any] = {"id": id, "user_id": user_id}
    if muted:
        item["muted"] = list(muted)
    return item


def _bulk_answer(rows: list[Outcome], counts: tuple[int, ...]) -> dict[str, Any]:
    results, at = [], 0
    for count in counts:
        results.append(_answer(rows[at:at + count]))
        at += count
    return {"results": results}


def _same_key(first: Stored | Exception, first_request: NotifyRequest,
              request: NotifyRequest) -> Stored | Exception:
    """The answer for a request whose key an earlier request of its group carried."""
    if request.fingerprint != first_request.fingerprint:
        return IdempotencyConflict(request.idempotency_key)
    if isinstance(first, Exception):
        return first
    return Stored(Delivery(first.delivery.response, replayed=True), [])


def _earlier(conn: sa.Connection, key: str,
             request_fingerprint: str) -> Stored | Exception | None:
    """The stored answer for ``key``, a conflict, or None when the key is new."""
    row = store.find_idempotency_key(conn, key, IDEMPOTENCY_TTL)
    if row is None:
        return None
    if row.fingerprint != request_fingerprint:
        return IdempotencyConflict(key)
    return Stored(Delivery(row.response, replayed=True), [])

