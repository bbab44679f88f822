"""The dispatcher: one background task per process that decides when a notification
is pushed, and pushes.

Each notification is stored with a delivery check due PUSH_AFTER later
(``check_at``); a receipt or a read clears it. When a check falls due and the
notification is still neither delivered nor read, the dispatcher emits it again to
the user's sockets (closing the gap of a node that died between commit and
publish: clients deduplicate by id) and, with push "auto", queues a push to each of
the user's subscriptions. Push "always" queues them at once (``push_at``).

Queued pushes are rows (``push_sends``), so a restart loses none. A pass claims due
rows in a short transaction, with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so that
several nodes never claim the same row, and moves a claimed send's ``due_at`` a
lease ahead: a node that dies mid-send leaves its sends to be retried once the lease
runs out.

Each send runs on a task of its own and settles on its own (issue 20: a pass used to
wait for its whole batch, so one endpoint dripping a byte every 5 s stopped every
user's pushes). A pass claims only as many sends as there are free slots
(MAX_CONCURRENT_SENDS in this process), and at most one for each subscription. It
never waits for them. A send that ends wakes the dispatcher. The next pass writes
back every answer that came, in one transaction: sent, gone (the subscription is
deleted), retried with back-off (honouring Retry-After, within the push's TTL), or
given up. A send lasts at most its deadline (utils/push/http.py, 10 s), well inside
the lease.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from utils import protocol
from utils.config import Settings
from utils.db.sqlite_locks import retry_when_locked
from utils.extensions import db, socketio
from utils.notifications.models import Notification, notification_payload, utcnow
from utils.ops import metrics
from utils.push import subscriptions
from utils.push.models import PushSend, PushSubscription
from utils.push.sender import Answer, Sender, Target, payload
from utils.tasks import Sweep

log = logging.getLogger(__name__)

CHECK_BATCH = 500
SEND_BATCH = 50
MAX_BATCHES_PER_PASS = 20  # then the next tick: other work gets the hub in between
# Sends under way in this process. A user has at most MAX_PUSH_SUBSCRIPTIONS_PER_USER
# (10) subscriptions and each has at most one send under way, so one user's slow
# endpoints leave most of the slots to everyone else.
MAX_CONCURRENT_SENDS = 32
LEASE = timedelta(seconds=60)  # longer than a send may take (utils/push/http.py: 10 s)
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 3600.0

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


class PushDispatcher(Sweep):
    interval = 1.0

    def __init__(self, app: Flask, settings: Settings, sender: Sender | None,
                 start_task: Any, sleep: Any) -> None:
        super().__init__(start_task, sleep)
        self._app = app
        self._settings = settings
        self._sender = sender
        self._wakeup = threading.Event()
        self._lock = threading.Lock()
        self._busy: set[int] = set()  # subscriptions with a send under way here
        self._finished: list[tuple[Job, Answer]] = []  # answers not yet written back

    def wake(self) -> None:
        """Run the next pass now (a push "always" was stored, or a send ended)."""
        self._wakeup.set()

    def _run(self) -> None:
        while True:
            self._wakeup.wait(self.interval)
            self._wakeup.clear()
            try:
                self.sweep_once()
            except Exception as exc:  # the next tick tries again; work stays in the database
                log.error("push dispatch pass failed: %s", type(exc).__name__)

    def sweep_once(self) -> int:
        """One pass: due delivery checks, then due sends; returns how many rows it
        handled."""
        handled = 0
        with self._app.app_context():
            for _ in range(MAX_BATCHES_PER_PASS):
                count = self.check_deliveries()
                handled += count
                if count < CHECK_BATCH:
                    break
            for _ in range(MAX_BATCHES_PER_PASS):
                count = self.send_due()
                handled += count
                if count < SEND_BATCH:
                    break
        return handled

    # -- delivery checks ---------------------------------------------------------------

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

    # -- sends -------------------------------------------------------------------------

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
            self._settle([], [], dropped)
        for job in jobs:
            self._start(job)
        return claimed

    def settle_finished(self) -> int:
        """Write back the answers of the sends that ended; returns how many."""
        with self._lock:
            finished, self._finished = self._finished, []
        if finished:
            try:
                self._settle([job for job, _ in finished], [a for _, a in finished], [])
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
            answer = self._sender.send(job.target, payload(job.notification), ttl,
                                       job.urgency, job.topic)
        except Exception as exc:  # a bug must not lose the send: it is retried
            log.error("push send failed: %s", type(exc).__name__)
        finally:
            self._finish(job, answer)

    def _finish(self, job: Job, answer: Answer) -> None:
        with self._lock:
            self._finished.append((job, answer))
            self._busy.discard(job.target.id)
        self.wake()

    @retry_when_locked
    def _claim_sends(self, now: datetime, limit: int,
                     busy: set[int]) -> tuple[int, list[Job], list[int]]:
        """Up to ``limit`` due sends, leased, at most one per subscription and none for
        the ``busy`` ones; with the ids of those not to send (their notification or
        subscription gone, delivered meanwhile, or past their TTL)."""
        with db.engine.begin() as conn:
            ids = _due_sends(conn, now, limit, busy)
            if not ids:
                return 0, [], []
            rows = conn.execute(sa.select(
                _SENDS.c.id.label("send_id"), _SENDS.c.due_at, _SENDS.c.expires_at,
                _SENDS.c.attempts, _N.c.id, _N.c.type, _N.c.title, _N.c.body, _N.c.data,
                _N.c.created_at, _N.c.read_at, _N.c.delivered_at, _N.c.push,
                _N.c.push_urgency, _N.c.push_topic, _SUBS.c.id.label("sub_id"),
                _SUBS.c.endpoint, _SUBS.c.p256dh, _SUBS.c.auth,
            ).select_from(
                _SENDS.outerjoin(_N, _N.c.id == _SENDS.c.notification_id)
                .outerjoin(_SUBS, _SUBS.c.id == _SENDS.c.subscription_id)
            ).where(_SENDS.c.id.in_(ids))).all()
            conn.execute(sa.update(_SENDS).where(_SENDS.c.id.in_(ids)).values(
                due_at=now + LEASE, attempts=_SENDS.c.attempts + 1))
        metrics.dispatch_write()
        jobs, dropped = [], []
        for r in rows:
            if r.id is None or r.sub_id is None:
                dropped.append(r.send_id)  # pruned, or unsubscribed meanwhile
            elif r.push == "auto" and (r.delivered_at or r.read_at):
                dropped.append(r.send_id)
                metrics.pushed("suppressed")
            elif r.expires_at <= now:
                dropped.append(r.send_id)
                metrics.pushed("expired")
            else:
                jobs.append(Job(r.send_id, r.due_at, now, r.expires_at, r.attempts + 1,
                                Target(r.sub_id, r.endpoint, r.p256dh, r.auth),
                                notification_payload(r.id, r.type, r.title, r.body, r.data,
                                                     r.created_at, r.read_at, r.delivered_at),
                                r.push_urgency, r.push_topic))
        return len(rows), jobs, dropped

    @retry_when_locked
    def _settle(self, jobs: list[Job], answers: list[Answer], dropped: list[int]) -> None:
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
            if done:
                conn.execute(sa.delete(_SENDS).where(_SENDS.c.id.in_(done)))
            if later:
                conn.execute(sa.update(_SENDS).where(_SENDS.c.id == sa.bindparam("send_id"))
                             .values(due_at=sa.bindparam("due")), later)
            if sent_to:
                conn.execute(sa.update(_SUBS).where(_SUBS.c.id.in_(sent_to))
                             .values(last_success_at=utcnow()))
            subscriptions.delete_subscriptions(conn, sorted(gone))
        metrics.dispatch_write()
        metrics.subscriptions_removed("gone", len(gone))


def _due_ids(conn: sa.Connection, column: sa.Column, now: datetime, limit: int) -> set[int]:
    """Ids of rows due by ``now``, locked for this transaction; rows another node has
    locked are skipped (PostgreSQL; SQLite's one writer needs no lock)."""
    table = column.table
    query = (sa.select(table.c.id).where(column <= now).order_by(column).limit(limit)
             .with_for_update(skip_locked=True))
    return set(conn.execute(query).scalars())


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


def init_push(app: Flask, settings: Settings) -> tuple[Sender | None, PushDispatcher]:
    """The app's sender (when push is on) and dispatcher; the server process starts the
    dispatcher's task (entrypoints/runtime.py)."""
    sender = None
    if settings.push_enabled:
        sender = Sender(settings.vapid_private_key or "", settings.vapid_subject,
                        settings.web_push_endpoint_origins)
    return sender, PushDispatcher(app, settings, sender, socketio.start_background_task,
                                  socketio.sleep)
