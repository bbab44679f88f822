"""The dispatcher: one background task per process that runs push's two jobs, one
pass at a time: the delivery checks (utils/push/checks.py: emit again what was not
delivered, queue pushes) and the queue of sends (utils/push/sends.py: claim, send,
retry, settle).

Queued pushes are rows (``push_sends``), so a restart loses none. A pass claims due
rows in a short transaction, with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so that
several nodes never claim the same row, and moves a claimed send's ``due_at`` a
lease ahead: a node that dies mid-send leaves its sends to be retried once the lease
runs out.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask

from utils.config import Settings
from utils.db.schema import UPGRADE_COMMAND, names_a_missing_table
from utils.extensions import socketio
from utils.push.checks import CHECK_BATCH, DeliveryChecks
from utils.push.sender import Sender
from utils.push.sends import SEND_BATCH, SendQueue
from utils.tasks import Sweep

log = logging.getLogger(__name__)

MAX_BATCHES_PER_PASS = 20  # then the next tick: other work gets the hub in between


class PushDispatcher(Sweep):
    """The loop: wakes every ``interval`` or when woken, and runs one pass."""

    interval = 1.0

    def __init__(self, app: Flask, settings: Settings, sender: Sender | None,
                 start_task: Any, sleep: Any) -> None:
        super().__init__(start_task, sleep)
        self._app = app
        self._wakeup = threading.Event()
        self.checks = DeliveryChecks(settings, sender)
        self.sends = SendQueue(sender, start_task, self.wake)

    def wake(self) -> None:
        """Run the next pass now (a push "always" was stored, or a send ended)."""
        self._wakeup.set()

    def _run(self) -> None:
        failing = None  # the last failure logged: a failure that repeats is logged once
        while True:
            self._wakeup.wait(self.interval)
            self._wakeup.clear()
            try:
                self.sweep_once()
            except Exception as exc:  # the next tick tries again; work stays in the database
                problem = (f"{type(exc).__name__}: the database is not migrated; run "
                           f"`{UPGRADE_COMMAND}`" if names_a_missing_table(exc)
                           else type(exc).__name__)
                if problem != failing:
                    log.error("push dispatch pass failed: %s (logged again when it changes)",
                              problem)
                    failing = problem
                continue
            if failing is not None:
                log.warning("push dispatch passes again")
                failing = None

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

    # The two jobs, one pass each (tests and the loop call them by these names).
    def check_deliveries(self) -> int:
        return self.checks.check_deliveries()

    def send_due(self) -> int:
        return self.sends.send_due()

    def settle_finished(self) -> int:
        return self.sends.settle_finished()

    def in_flight(self) -> int:
        return self.sends.in_flight()


def init_push(app: Flask, settings: Settings) -> tuple[Sender | None, PushDispatcher]:
    """The app's sender (when push is on) and dispatcher; the server process starts the
    dispatcher's task (entrypoints/runtime.py)."""
    sender = None
    if settings.push_enabled:
        sender = Sender(settings.vapid_private_key or "", settings.vapid_subject,
                        settings.web_push_endpoint_origins)
    return sender, PushDispatcher(app, settings, sender, socketio.start_background_task,
                                  socketio.sleep)
