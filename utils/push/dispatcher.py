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
runs out. Answers are written back in one transaction per pass: sent, gone (the
subscription is deleted), retried with back-off (honouring Retry-After, within the
push's TTL), or given up.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from utils.config import Settings
from utils.extensions import db, socketio
from utils.notifications.models import (
    Notification,
    PushSend,
    PushSubscription,
    notification_payload,
    utcnow,
)
from utils.notifications.sqlite_locks import retry_when_locked
from utils.ops import metrics
from utils.push import subscriptions
from utils.push.sender import Answer, Sender, Target, payload
from utils.realtime import protocol
from utils.realtime.sweep import Sweep

log = logging.getLogger(__name__)

CHECK_BATCH = 500
SEND_BATCH = 50
MAX_BATCHES_PER_PASS = 20  # then the next tick: other work gets the hub in between
MAX_CONCURRENT_SENDS = 10
LEASE = timedelta(seconds=60)  # longer than a send may take (utils/push/sender.py)
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 3600.0
SENDER_KEY = "notifier.push_sender"

_N = Notification.__table__
_SENDS = PushSend.__table__
_SUBS = PushSubscription.__table__


@dataclass(frozen=True)
class Job:
    """A claimed send, with what it needs to be sent and settled."""

    send_id: int
    was_due: datetime
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

    def wake(self) -> None:
        """Run the next pass now (a push "always" was stored)."""
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
        """Claim due sends, send them (several at a time), write back the answers.
        Returns how many it claimed."""
        now = utcnow()
        claimed, jobs, dropped = self._claim_sends(now)
        if not claimed:
            return 0
        answers = self._send_all(jobs) if self._sender is not None else []
        self._settle(now, jobs, answers, dropped)
        return claimed

    @retry_when_locked
    def _claim_sends(self, now: datetime) -> tuple[int, list[Job], list[int]]:
        """The due sends, leased; with the ids of those not to send (their notification
        or subscription gone, delivered meanwhile, or past their TTL)."""
        with db.engine.begin() as conn:
            ids = _due_ids(conn, _SENDS.c.due_at, now, SEND_BATCH)
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
                jobs.append(Job(r.send_id, r.due_at, r.expires_at, r.attempts + 1,
                                Target(r.sub_id, r.endpoint, r.p256dh, r.auth),
                                notification_payload(r.id, r.type, r.title, r.body, r.data,
                                                     r.created_at, r.read_at, r.delivered_at),
                                r.push_urgency, r.push_topic))
        return len(rows), jobs, dropped

    def _send_all(self, jobs: list[Job]) -> list[Answer]:
        """Every job's answer, at most MAX_CONCURRENT_SENDS under way at once."""
        answers: list[Answer] = [Answer("retry", None)] * len(jobs)
        slots = threading.Semaphore(MAX_CONCURRENT_SENDS)
        finished = threading.Semaphore(0)

        def run(index: int, job: Job) -> None:
            try:
                ttl = max(1, int((job.expires_at - utcnow()).total_seconds()))
                answers[index] = self._sender.send(job.target, payload(job.notification),
                                                   ttl, job.urgency, job.topic)
            except Exception as exc:  # a bug must not lose the send: it is retried
                log.error("push send failed: %s", type(exc).__name__)
            finally:
                slots.release()
                finished.release()

        for index, job in enumerate(jobs):
            slots.acquire()
            self._start_task(run, index, job)
        for _ in jobs:
            finished.acquire()
        return answers

    @retry_when_locked
    def _settle(self, now: datetime, jobs: list[Job], answers: list[Answer],
                dropped: list[int]) -> None:
        done, gone, sent_to, later = list(dropped), set(), [], []
        for job, answer in zip(jobs, answers, strict=False):
            metrics_outcome, lag = answer.outcome, (now - job.was_due).total_seconds()
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
        if jobs and self._sender is None:
            done.extend(job.send_id for job in jobs)  # push was turned off: drop them
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


def init_push(app: Flask, settings: Settings) -> None:
    """The app's sender (when push is on) and dispatcher; the server process starts the
    dispatcher's task (utils/ops/runtime.py)."""
    from utils.notifications.notifier import DISPATCHER_KEY

    sender = None
    if settings.push_enabled:
        sender = Sender(settings.vapid_private_key or "", settings.vapid_subject,
                        settings.web_push_endpoint_origins)
    app.extensions[SENDER_KEY] = sender
    app.extensions[DISPATCHER_KEY] = PushDispatcher(app, settings, sender,
                                                    socketio.start_background_task,
                                                    socketio.sleep)
