"""Delivery receipts: a client says which notifications it received, and the first
receipt for each sets its ``delivered_at``, which ends its delivery check (no
re-emit, no "auto" push).

Receipts arrive in bursts: every tab of every user that a fan-out reached answers
at once. They go through the same group commit as notifications
(utils/db/group_commit.py), with two differences. A group's leader waits
RECEIPT_LINGER before closing it, not just one pass of the hub: nobody waits on a
receipt's ack, so receipts that arrive within that time share one transaction, with
one UPDATE in it, however many users, ids and tabs (a steady trickle costs a commit
per linger, not per receipt). And at most RECEIPT_WRITES groups are written at once:
a group that waits for its turn keeps gathering, so a flood makes bigger groups, not
more transactions.

A receipt is cheap to take in: every delivered notification gets one, so the
``delivered`` event runs outside Flask's contexts (routes/events.py, RAW_EVENTS), and
a group pushes one app context for its write, not one per receipt.

What waits is bounded. Every receipt waiting to be written holds its ids (and the
greenlet that handles its event), so a worker admits at most MAX_PENDING_IDS ids in
waiting receipts, and MAX_PENDING_IDS_PER_USER of one user's. A receipt beyond either
is refused at once with the retryable ``rate_limited`` ack: a receipt changes nothing
the second time, and the reference client sends it again a few seconds later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask, has_app_context

from utils.db.sqlite_locks import retry_when_locked
from utils.errors import ValidationError
from utils.extensions import db
from utils.notifications import store
from utils.ops import metrics
from utils.services import services

MAX_GROUP_IDS = 20_000
RECEIPT_LINGER = 0.05  # seconds
RECEIPT_WRITES = 2  # one group written while the next gathers
# A waiting id costs about 100 bytes (its int, the list, its share of the event's
# decoded packet): 50,000 of them about 5 MB. Unbounded, twenty sockets of one user
# sending 1,000-id receipts as fast as their read budget allows (~80,000 ids a second)
# queued faster than PostgreSQL wrote them: 107 to 325 MB in 30 s.
MAX_PENDING_IDS = 50_000
MAX_PENDING_IDS_PER_USER = 5_000  # 20 tabs acknowledging a full 100-id batch is 2,000


def linger() -> None:
    time.sleep(RECEIPT_LINGER)  # monkey-patched: other greenthreads run meanwhile


@dataclass(frozen=True)
class Receipt:
    user_id: str
    ids: list[int]
    # The app, when the receipt comes from outside an app context (the ``delivered``
    # handler runs without one): its group's write pushes one, once for the group.
    app: Flask | None = field(default=None, compare=False, repr=False)


class Backlog:
    """The ids of receipts admitted and not yet answered, in all and per user."""

    def __init__(self, max_ids: int = MAX_PENDING_IDS,
                 max_user_ids: int = MAX_PENDING_IDS_PER_USER) -> None:
        self.max_ids, self.max_user_ids = max_ids, max_user_ids
        self._lock = threading.Lock()  # green under eventlet and gevent
        self.total = 0
        self._users: dict[str, int] = {}

    @contextmanager
    def admit(self, user_id: str, count: int) -> Iterator[None]:
        """Holds ``count`` ids of ``user_id`` while the block runs; raises the
        ``rate_limited`` ValidationError instead when either bound would be passed."""
        with self._lock:
            mine = self._users.get(user_id, 0)
            if self.total + count > self.max_ids or mine + count > self.max_user_ids:
                raise ValidationError("too many receipts are waiting to be written; send "
                                      "this one again in a few seconds", code="rate_limited")
            self.total += count
            self._users[user_id] = mine + count
        try:
            yield
        finally:
            with self._lock:
                self.total -= count
                left = self._users.pop(user_id) - count
                if left:
                    self._users[user_id] = left


def record_receipt(user_id: str, ids: list[int], app: Flask | None = None) -> int:
    """Mark the user's notifications among ``ids`` delivered; returns how many were
    not marked before. Raises ValidationError ``rate_limited`` when the backlog is
    full (see the module's docstring). ``app``: the app, when called outside its
    context."""
    parts = services(app)
    with parts.receipt_backlog.admit(user_id, len(ids)):
        return parts.receipts.submit(Receipt(user_id, ids, app), weight=len(ids))


def write_receipts(receipts: list[Receipt]) -> list[int]:
    """One transaction for a group of receipts. Each receipt is answered with the ids
    it marked; an id two receipts of the group share counts for the first."""
    app = receipts[0].app if receipts else None
    if app is None or has_app_context():
        return _write_receipts(receipts)
    with app.app_context():
        return _write_receipts(receipts)


@retry_when_locked
def _write_receipts(receipts: list[Receipt]) -> list[int]:
    wanted: dict[str, set[int]] = {}
    for receipt in receipts:
        wanted.setdefault(receipt.user_id, set()).update(receipt.ids)
    with db.engine.begin() as conn:
        marked = store.mark_delivered(conn, wanted)
    metrics.delivered(sum(len(ids) for ids in marked.values()))
    counts = []
    for receipt in receipts:
        mine = marked[receipt.user_id].intersection(receipt.ids)
        marked[receipt.user_id] -= mine
        counts.append(len(mine))
    return counts
