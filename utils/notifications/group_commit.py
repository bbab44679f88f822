"""Group commit: writers that arrive together share one transaction and one commit.

One worker's hub runs every request, so a commit per producer request makes the
commit (and the statement around it) the cost that caps throughput. Here the first
writer to arrive leads: it yields once, so every writer the hub can run now joins
it, then runs the whole group's work in one transaction on its own session, and
wakes the others with their own results. Writers that arrive while a group is being
written queue for the next one, which the first of them leads. With no concurrency
a group is one writer and costs one extra yield; under load groups grow by
themselves, because writers queue while the hub is busy.

A group's write fails or succeeds whole. When it fails with more than one writer in
it, each writer's work is run again alone, so one writer's bad request (an
idempotency key reused, say) never fails another's: each gets its own answer or its
own error, exactly as without grouping. Writes that cannot share a transaction with
strangers should not come here.

Locks and events are ``threading``'s: the eventlet and gevent workers monkey-patch
them into green ones, and under ``ASYNC_MODE=threading`` they are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


class _Ticket(Generic[Req, Res]):
    __slots__ = ("request", "weight", "done", "lead", "result", "error")

    def __init__(self, request: Req, weight: int) -> None:
        self.request = request
        self.weight = weight
        self.done = threading.Event()
        self.lead = False  # set when this writer is to lead the next group
        self.result: Res | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Req, Res]):
    """``write(requests)`` runs a whole group in one transaction and returns one result
    per request, in order; a result that is an exception is raised to that writer
    alone. ``max_weight`` bounds a group (in rows, say); a lone request heavier than
    that still goes, in a group of its own."""

    def __init__(self, write: Callable[[list[Req]], Sequence[Res | BaseException]],
                 max_weight: int) -> None:
        self._write = write
        self._max_weight = max_weight
        self._lock = threading.Lock()
        self._queue: list[_Ticket[Req, Res]] = []
        self._leading = False
        self.groups = 0  # counters for tests and the bench: groups written, writers
        self.writers = 0

    def submit(self, request: Req, weight: int = 1) -> Res:
        ticket: _Ticket[Req, Res] = _Ticket(request, weight)
        with self._lock:
            self._queue.append(ticket)
            lead = not self._leading
            self._leading = True
        if not lead:
            ticket.done.wait()
            if ticket.lead:  # woken to lead: this writer's own work is still queued
                self._lead()
        else:
            time.sleep(0)  # the hub runs every writer that is ready now; they join
            self._lead()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]

    def _lead(self) -> None:
        """Write one group, then hand the lead to the first writer still queued."""
        with self._lock:
            group = self._take()
        try:
            self._write_group(group)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._leading = False
            for ticket in group:
                if ticket.result is None and ticket.error is None:
                    # The leader was stopped mid-write (its greenlet killed, say).
                    ticket.error = RuntimeError("the group's write was interrupted")
                ticket.done.set()

    def _take(self) -> list[_Ticket[Req, Res]]:
        weight, count = 0, 0
        for ticket in self._queue:
            if count and weight + ticket.weight > self._max_weight:
                break
            weight += ticket.weight
            count += 1
        group, self._queue = self._queue[:count], self._queue[count:]
        return group

    def _write_group(self, group: list[_Ticket[Req, Res]]) -> None:
        self.groups += 1
        self.writers += len(group)
        try:
            results = self._write([t.request for t in group])
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            for ticket in group:  # one bad request must not fail the others
                self._write_alone(ticket)
            return
        for ticket, result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                ticket.error = result
            else:
                ticket.result = result

    def _write_alone(self, ticket: _Ticket[Req, Res]) -> None:
        try:
            (result,) = self._write([ticket.request])
        except Exception as exc:
            ticket.error = exc
            return
        if isinstance(result, BaseException):
            ticket.error = result
        else:
            ticket.result = result
