"""Push's queue of sends (``push_sends``): claim the due ones for the free slots,
send each on its own task, and settle every answer in one step (``settle``,
``write_settlement``), which the test-push route (routes/push.py) shares.

Each send runs on a task of its own and settles on its own (issue 20: a pass used to
wait for its whole batch, so one endpoint dripping a byte every 5 s stopped every
user's pushes). A pass claims only as many sends as there are free slots
(MAX_CONCURRENT_SENDS in this process), and at most one for each subscription. It
never waits for them. A send that ends wakes the dispatcher. The next pass writes
back every answer that came, in one transaction. A send lasts at most its deadline
(utils/push/http.py, 10 s), well inside the lease.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from utils.db.sqlite_locks import retry_when_locked
from utils.extensions import db
from utils.notifications.models import Notification, notification_payload, utcnow
from utils.ops import metrics
from utils.push import subscriptions
from utils.push.models import PushSend, PushSubscription
from utils.push.sender import Answer, Sender, Target, collapse_topic, payload

log = logging.getLogger(__name__)

SEND_BATCH = 50
# Sends under way in this process. A user has at most MAX_PUSH_SUBSCRIPTIONS_PER_USER
# (10) subscriptions and each has at most one send under way, so one user's slow
# endpoints leave most of the slots to everyone else.
MAX_CONCURRENT_SENDS = 32
LEASE = timedelta(seconds=60)  # longer than a send may take (utils/push/http.py: 10 s)
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 3600.0
# What a collapsed push adds under the newest notification's body, {count} being how
# many older ones it replaced; a notification's collapse_template says it otherwise.
DEFAULT_COLLAPSE_TEMPLATE = "and {count} more"

_N = Notification.__table__
_SENDS = PushSend.__table__
_SUBS = PushSubscription.__table__


@dataclass(frozen=True)
class Job:
    """A claimed send, with what it needs to be sent and settled."""

    send_id: int
    was_due: datetime
    claimed_at: datetime
    expires_at: datetime
    attempts: int
    target: Target
    notification: dict[str, Any]
    urgency: str | None
    topic: str | None
    kept: str = ""  # the end of the body a cut to fit keeps whole: the folded line


class SendQueue:
    """The sends under way in this process, and the answers not yet written back."""

    def __init__(self, sender: Sender | None, start_task: Callable[..., Any],
                 wake: Callable[[], None]) -> None:
        self._sender = sender
        self._start_task = start_task
        self._wake = wake  # a send ended: the dispatcher's next pass settles it
        self._lock = threading.Lock()
        self._busy: set[int] = set()  # subscriptions with a send under way here
        self._finished: list[tuple[Job, Answer]] = []  # answers not yet written back

    def send_due(self) -> int:
        """Write back the answers that came, then claim due sends for the free slots and
        start each on its own task. Returns how many it claimed."""
        self.settle_finished()
        with self._lock:
            busy = set(self._busy)
        free = SEND_BATCH if self._sender is None else MAX_CONCURRENT_SENDS - len(busy)
        if free <= 0:
            return 0
        now = utcnow()
        claimed, jobs, dropped = self._claim_sends(now, min(free, SEND_BATCH), busy)
        if not claimed:
            return 0
        if self._sender is None:  # push was turned off: drop them
            dropped += [job.send_id for job in jobs]
            jobs = []
        if dropped:
            settle([], [], dropped)
        for job in jobs:
            self._start(job)
        return claimed

    def settle_finished(self) -> int:
        """Write back the answers of the sends that ended; returns how many."""
        with self._lock:
            finished, self._finished = self._finished, []
        if finished:
            try:
                settle([job for job, _ in finished], [a for _, a in finished], [])
            except Exception:
                with self._lock:  # the next pass tries again
                    self._finished[:0] = finished
                raise
        return len(finished)

    def in_flight(self) -> int:
        """Sends under way in this process."""
        with self._lock:
            return len(self._busy)

    def _start(self, job: Job) -> None:
        with self._lock:
            self._busy.add(job.target.id)
        try:
            self._start_task(self._send_one, job)
        except Exception as exc:  # no task: retried like a send without an answer
            log.error("push send not started: %s", type(exc).__name__)
            self._finish(job, Answer("retry", None))

    def _send_one(self, job: Job) -> None:
        answer = Answer("retry", None)
        try:
            ttl = max(1, int((job.expires_at - utcnow()).total_seconds()))
            answer = self._sender.send(job.target, payload(job.notification, job.kept), ttl,
                                       job.urgency, job.topic)
        except Exception as exc:  # a bug must not lose the send: it is retried
            log.error("push send failed: %s", type(exc).__name__)
        finally:
            self._finish(job, answer)

    def _finish(self, job: Job, answer: Answer) -> None:
        with self._lock:
            self._finished.append((job, answer))
            self._busy.discard(job.target.id)
        self._wake()

    @retry_when_locked
    def _claim_sends(self, now: datetime, limit: int,
                     busy: set[int]) -> tuple[int, list[Job], list[int]]:
        """Up to ``limit`` due sends, leased, at most one per subscription and none for
        the ``busy`` ones; with the ids of those not to send (their notification or
        subscription gone, the subscription turned off, delivered or read meanwhile
        when push "auto" or deferred, or past their TTL)."""
        with db.engine.begin() as conn:
            ids = _due_sends(conn, now, limit, busy)
            if not ids:
                return 0, [], []
            rows = conn.execute(sa.select(
                _SENDS.c.id.label("send_id"), _SENDS.c.due_at, _SENDS.c.expires_at,
                _SENDS.c.attempts, _SENDS.c.deferred, _SENDS.c.collapse_key, _SENDS.c.folded,
                _N.c.id, _N.c.type, _N.c.title, _N.c.body, _N.c.data, _N.c.created_at,
                _N.c.read_at, _N.c.delivered_at, _N.c.push, _N.c.push_urgency,
                _N.c.push_topic, _N.c.collapse_template, _SUBS.c.id.label("sub_id"),
                _SUBS.c.endpoint, _SUBS.c.p256dh, _SUBS.c.auth, _SUBS.c.enabled,
            ).select_from(
                _SENDS.outerjoin(_N, _N.c.id == _SENDS.c.notification_id)
                .outerjoin(_SUBS, _SUBS.c.id == _SENDS.c.subscription_id)
            ).where(_SENDS.c.id.in_(ids))).all()
            conn.execute(sa.update(_SENDS).where(_SENDS.c.id.in_(ids)).values(
                due_at=now + LEASE, attempts=_SENDS.c.attempts + 1))
        metrics.dispatch_write()
        jobs, dropped = [], []
        for r in rows:
            if r.id is None or r.sub_id is None or not r.enabled:
                dropped.append(r.send_id)  # pruned, unsubscribed or turned off meanwhile
            elif (r.push == "auto" or r.deferred) and acknowledged(r):
                dropped.append(r.send_id)
                metrics.pushed("suppressed")
            elif r.expires_at <= now:
                dropped.append(r.send_id)
                metrics.pushed("expired")
            else:
                jobs.append(_job(r, now))
        return len(rows), jobs, dropped


def acknowledged(row: Any) -> bool:
    """Whether the notification was delivered or read after it was stored. A row
    stored already read (its recipient muted in_app: utils/notifications/notifier.py)
    has both set to its created_at, and no device has seen it: it is not."""
    return any(moment is not None and moment != row.created_at
               for moment in (row.delivered_at, row.read_at))


def _job(r: Any, now: datetime) -> Job:
    """A claimed send as a Job. A collapsed one (``folded`` > 0) carries the newest
    notification, its body followed by a line saying how many it replaced, and
    ``"folded"``; a send with a collapse_key goes with a Topic, so that the push
    service replaces one of its pushes still waiting for the device."""
    notification = notification_payload(r.id, r.type, r.title, r.body, r.data,
                                        r.created_at, r.read_at, r.delivered_at)
    kept = ""
    if r.folded:
        line = folded_line(r.collapse_template, r.folded)
        kept = "\n" + line if r.body else line
        notification["body"] = (r.body or "") + kept
        notification["folded"] = r.folded
    topic = r.push_topic or (collapse_topic(r.collapse_key) if r.collapse_key else None)
    return Job(r.send_id, r.due_at, now, r.expires_at, r.attempts + 1,
               Target(r.sub_id, r.endpoint, r.p256dh, r.auth), notification,
               r.push_urgency, topic, kept)


def folded_line(template: str | None, count: int) -> str:
    """The line under a collapsed push's body: ``template`` (the default when None)
    with {count} replaced; only {count}, so other braces stay as they are."""
    return (template or DEFAULT_COLLAPSE_TEMPLATE).replace("{count}", str(count))


@retry_when_locked
def settle(jobs: list[Job], answers: list[Answer], dropped: list[int]) -> None:
    """Write back the answers of ``jobs`` and drop the ``dropped`` sends, in one
    transaction: sent, gone (the subscription is deleted), retried with back-off
    (honouring Retry-After, within the push's TTL), or given up."""
    done, gone, sent_to, later = list(dropped), set(), [], []
    for job, answer in zip(jobs, answers, strict=True):
        metrics_outcome = answer.outcome
        lag = (job.claimed_at - job.was_due).total_seconds()
        if answer.outcome == "retry":
            delay = max(answer.retry_after or 0.0,
                        min(RETRY_FIRST_SECONDS * 2 ** (job.attempts - 1), RETRY_MAX_SECONDS))
            due = utcnow() + timedelta(seconds=delay)
            if due < job.expires_at:
                later.append({"send_id": job.send_id, "due": due})
                metrics_outcome = "retried"
            else:
                done.append(job.send_id)
                metrics_outcome = "expired"
        elif answer.outcome == "removed":
            gone.add(job.target.id)
        else:
            done.append(job.send_id)
            if answer.outcome == "sent":
                sent_to.append(job.target.id)
        metrics.pushed(metrics_outcome, lag)
    with db.engine.begin() as conn:
        write_settlement(conn, sent_to=sent_to, gone=sorted(gone), done=done, later=later)
    metrics.dispatch_write()
    metrics.subscriptions_removed("gone", len(gone))


def write_settlement(conn: sa.Connection, *, sent_to: Sequence[int], gone: Sequence[int],
                     done: Sequence[int] = (), later: Sequence[dict[str, Any]] = ()) -> None:
    """The one settle step, inside the caller's transaction: subscriptions that took a
    push (``sent_to``) or are gone for good (``gone``: deleted, with their sends);
    queued sends finished (``done``) or due again later (``later``: send_id, due).
    The dispatcher's sends and the test-push route both settle here."""
    if done:
        conn.execute(sa.delete(_SENDS).where(_SENDS.c.id.in_(list(done))))
    if later:
        conn.execute(sa.update(_SENDS).where(_SENDS.c.id == sa.bindparam("send_id"))
                     .values(due_at=sa.bindparam("due")), list(later))
    if sent_to:
        conn.execute(sa.update(_SUBS).where(_SUBS.c.id.in_(list(sent_to)))
                     .values(last_success_at=utcnow()))
    subscriptions.delete_subscriptions(conn, list(gone))


def _due_sends(conn: sa.Connection, now: datetime, limit: int, busy: set[int]) -> list[int]:
    """Ids of up to ``limit`` due sends, locked for this transaction, the first of each
    subscription not in ``busy``: one send per subscription at a time."""
    query = (sa.select(_SENDS.c.id, _SENDS.c.subscription_id).where(_SENDS.c.due_at <= now)
             .order_by(_SENDS.c.due_at).limit(SEND_BATCH).with_for_update(skip_locked=True))
    if busy:
        query = query.where(_SENDS.c.subscription_id.not_in(busy))
    ids, taken = [], set()
    for send_id, subscription_id in conn.execute(query):
        if subscription_id not in taken:
            taken.add(subscription_id)
            ids.append(send_id)
            if len(ids) == limit:
                break
    return ids


@retry_when_locked
def settle_subscriptions(*, sent_to: list[int], gone: list[int]) -> None:
    """The settle step for pushes sent without a queued row (the test push)."""
    if sent_to or gone:
        with db.engine.begin() as conn:
            write_settlement(conn, sent_to=sent_to, gone=gone)
    metrics.subscriptions_removed("gone", len(gone))


# -- the test push (routes/push.py): every subscription of one user, at once

# Test pushes under way in this process: one call per user, and TEST_CALLS in all. A
# call sends to each of the user's subscriptions at once and ends within one send's
# deadline, whether or not its client is still there. Before issue 20, 300 calls
# whose clients had hung up held 300 outbound connections.
TEST_CALLS_PER_USER = 1
TEST_CALLS = 16


class CallsUnderWay:
    """Counts the test-push calls under way, per user and in all."""

    def __init__(self, per_user: int = TEST_CALLS_PER_USER, total: int = TEST_CALLS) -> None:
        self.per_user, self.total = per_user, total
        self._lock = threading.Lock()
        self._by_user: Counter[str] = Counter()

    @contextmanager
    def hold(self, user_id: str) -> Iterator[bool]:
        """Yields whether a call for ``user_id`` may run now, and counts it while it
        does."""
        with self._lock:
            allowed = (self._by_user[user_id] < self.per_user
                       and sum(self._by_user.values()) < self.total)
            if allowed:
                self._by_user[user_id] += 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._lock:
                    self._by_user[user_id] -= 1
                    if not self._by_user[user_id]:
                        del self._by_user[user_id]


def send_each(start_task: Callable[..., Any], push: Sender, targets: list[Target], body: bytes,
              ttl: int, urgency: str | None = None) -> list[Answer]:
    """``body`` to every target at once, each on its own task; each ends within the
    sender's deadline. Returns the answers in the targets' order."""
    answers = [Answer("retry", None)] * len(targets)
    ended = threading.Semaphore(0)

    def send(index: int, target: Target) -> None:
        try:
            answers[index] = push.send(target, body, ttl, urgency)
        finally:
            ended.release()

    for index, target in enumerate(targets):
        start_task(send, index, target)
    for _ in targets:
        ended.acquire()
    return answers
