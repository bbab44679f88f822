"""The outbox consumer: one background task per worker process.

Woken by ``NOTIFY notification_outbox`` (the table's trigger fires when a producer
commits) on a LISTEN connection of its own (listener.py), and by a poll every
OUTBOX_POLL_SECONDS as the fallback: the poll finds rows whose notification was
missed, and while the LISTEN connection is down (a restart, pg_terminate_backend) it
is the only wake-up; each poll tries to reconnect it.

Each pass takes batches (batch.py) until the outbox is empty or a bound is reached,
then yields. Several workers and nodes consume one outbox: ``FOR UPDATE SKIP LOCKED``
gives each row to one of them. Emits follow each batch's commit, through the
notifier's own emit (utils/notifications/notifier.py), so a crash before the commit
emits nothing and leaves the rows to be claimed again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from utils.config import Settings
from utils.extensions import db
from utils.notifications.notifier import emit_notification, wake_dispatcher
from utils.ops import metrics
from utils.outbox import batch as batches
from utils.outbox.listener import Listener, ListenLost

log = logging.getLogger(__name__)

MAX_BATCHES_PER_PASS = 20  # then the hub gets a turn before the next pass
# The outbox's own pool when it is another database: the claim's connection, and
# one spare for the lag query. The LISTEN connection is outside it.
OUTBOX_POOL = {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True, "pool_timeout": 10}


class OutboxConsumer:
    def __init__(self, app: Flask, settings: Settings, start_task: Callable[..., Any],
                 sleep: Callable[[float], None]) -> None:
        self._app = app
        self._start_task = start_task
        self._sleep = sleep
        self.batch_size = settings.outbox_batch_size
        self.poll_seconds = settings.outbox_poll_seconds
        self._check_after = timedelta(seconds=settings.push_after)
        self.same_database = settings.outbox_database_url == settings.database_url
        self._own_engine: sa.Engine | None = None
        if not self.same_database:
            self._own_engine = sa.create_engine(settings.outbox_database_url, **OUTBOX_POOL)
            self._tag = batches.database_tag(self._own_engine.url)
        self.listener: Listener | None = None
        self._next_listen = 0.0  # monotonic time of the next (re)connect attempt
        self._failing: dict[str, str] = {}  # what is failing now, each logged once
        self._started = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.task: Any = None
        self.backlog = False  # the last pass stopped at its bound, not at an empty outbox

    # -- the task ---------------------------------------------------------------------

    def ensure_started(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self.task = self._start_task(self._run)

    def stop(self) -> None:
        """End the task after its current pass or wait (tests; a worker just exits)."""
        self._stopped.set()
        if self.listener is not None:
            self.listener.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.run_pass()
            except Exception as exc:  # the next poll tries again; the rows stay put
                self._report("pass", f"outbox pass failed: {batches.describe(exc)}")
                self._sleep(self.poll_seconds)
                continue
            if self._stopped.is_set():
                break
            if self.backlog:
                self._sleep(0)  # the bound was reached, not the end: others get a turn
            else:
                self._wait()
        if self.listener is not None:
            self.listener.close()

    def _wait(self) -> None:
        """Until a NOTIFY, or the poll interval."""
        if self.listener is None or not self.listener.connected:
            if self._connect_listener():
                return  # a pass at once: rows may have come while it was down
            self._sleep(self.poll_seconds)
            return
        try:
            self.listener.wait(self.poll_seconds)
        except ListenLost as exc:
            log.warning("outbox LISTEN connection lost (%s): polling every %ss and "
                        "reconnecting", exc, self.poll_seconds)
            self._next_listen = time.monotonic() + self.poll_seconds

    def _connect_listener(self) -> bool:
        if time.monotonic() < self._next_listen:
            return False
        self._next_listen = time.monotonic() + self.poll_seconds
        listener = self.listener or Listener(self.engine())
        try:
            listener.connect()
        except Exception as exc:
            self._report("listen", f"outbox LISTEN connect failed ({batches.describe(exc)}); "
                                   f"polling every {self.poll_seconds}s")
            return False
        self.listener = listener
        self._failing.pop("listen", None)
        log.info("outbox consumer listening (backend %s)", listener.backend_pid)
        return True

    def _report(self, what: str, message: str) -> None:
        """Log a failure once, not on every poll while it lasts."""
        if self._failing.get(what) != message:
            log.error("%s", message)
            self._failing[what] = message

    # -- one pass -----------------------------------------------------------------------

    def engine(self) -> sa.Engine:
        """The outbox's database: the notifier's own (the app's pool), or its own."""
        if self._own_engine is not None:
            return self._own_engine
        with self._app.app_context():
            return db.engine

    def run_pass(self) -> int:
        """Batches until the outbox is empty (or MAX_BATCHES_PER_PASS); returns the
        rows handled. Then the lag gauge."""
        handled = 0
        self.backlog = False
        with self._app.app_context():
            for _ in range(MAX_BATCHES_PER_PASS):
                claimed = self.consume_batch(self.batch_size)
                handled += claimed
                if claimed < self.batch_size:
                    break
            else:
                self.backlog = True  # full batches all the way: more may be waiting
            with self.engine().connect() as conn:
                metrics.outbox_lag(batches.oldest_age(conn))
        if self._failing.pop("pass", None):
            log.info("outbox passes succeed again")
        return handled

    def consume_batch(self, limit: int) -> int:
        """One transaction of up to ``limit`` rows, then its emits; returns the rows
        claimed."""
        started = time.perf_counter()
        with self.engine().begin() as conn:
            if self.same_database:
                batch = batches.consume_here(conn, limit, self._check_after)
            else:
                batch = batches.consume_elsewhere(conn, limit, self._tag)
        self._after_commit(batch, started)
        return batch.claimed

    def _after_commit(self, batch: batches.Batch, started: float) -> None:
        if self.same_database:
            metrics.stored(batch.stored)  # elsewhere, store_group counted its own
        metrics.outbox_consumed(batch.consumed)
        metrics.outbox_dead_lettered(len(batch.dead))
        for row, error in batch.dead:
            log.warning("outbox row %s dead-lettered: %s", row.id, error[:200])
        for user_id, payload in batch.emits:
            emit_notification(user_id, payload, started)
        if batch.push_now:
            wake_dispatcher()


def init_outbox(app: Flask, settings: Settings) -> OutboxConsumer | None:
    """The app's consumer when OUTBOX_ENABLED (the server process starts its task:
    entrypoints/runtime.py), else None."""
    if not settings.outbox_enabled:
        return None
    from utils.extensions import socketio

    return OutboxConsumer(app, settings, socketio.start_background_task, socketio.sleep)
