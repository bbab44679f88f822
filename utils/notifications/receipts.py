"""Delivery receipts: a client says which notifications it received, and the first
receipt for each sets its ``delivered_at``, which ends its delivery check (no
re-emit, no "auto" push).

Receipts arrive in bursts: every tab of every user that a fan-out reached answers
at once. They go through the same group commit as notifications
(utils/db/group_commit.py), with one difference: a group's leader waits
RECEIPT_LINGER before closing it, not just one pass of the hub. Nobody waits on a
receipt's ack, so receipts that arrive within that time share one transaction, with
one UPDATE per user in it, however many ids and tabs: a steady trickle (each tab
acknowledging its own notification) costs a commit per linger, not per receipt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from utils.db.sqlite_locks import retry_when_locked
from utils.extensions import db
from utils.notifications import store
from utils.ops import metrics
from utils.services import services

MAX_GROUP_IDS = 20_000
RECEIPT_LINGER = 0.05  # seconds


def linger() -> None:
    time.sleep(RECEIPT_LINGER)  # monkey-patched: other greenthreads run meanwhile


@dataclass(frozen=True)
class Receipt:
    user_id: str
    ids: list[int]


def record_receipt(user_id: str, ids: list[int]) -> int:
    """Mark the user's notifications among ``ids`` delivered; returns how many were
    not marked before."""
    return services().receipts.submit(Receipt(user_id, ids), weight=len(ids))


@retry_when_locked
def write_receipts(receipts: list[Receipt]) -> list[int]:
    """One transaction for a group of receipts. Each receipt is answered with the ids
    it marked; an id two receipts of the group share counts for the first."""
    wanted: dict[str, set[int]] = {}
    for receipt in receipts:
        wanted.setdefault(receipt.user_id, set()).update(receipt.ids)
    with db.engine.begin() as conn:
        marked = {user: store.mark_delivered(conn, user, ids) for user, ids in wanted.items()}
    metrics.delivered(sum(len(ids) for ids in marked.values()))
    counts = []
    for receipt in receipts:
        mine = marked[receipt.user_id].intersection(receipt.ids)
        marked[receipt.user_id] -= mine
        counts.append(len(mine))
    return counts
