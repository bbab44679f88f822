"""Group commit: writers that arrive together share one transaction and one commit.

One worker's hub runs every request, so a commit per producer request makes the
commit (and the statement machinery around it) the cost that caps throughput. Here
the first writer to arrive opens a group and leads it: it yields once (``gather``),
so every writer the hub can run now joins the group, then it closes the group,
writes it in one transaction on its own connection, and wakes the others with their
own results. With no concurrency a group is one writer and costs one extra yield;
under load, writers whose requests the hub parsed in the same pass share a commit.

A writer that arrives while another group is being written opens a new group: groups
never wait for each other. So a write that blocks (a PostgreSQL lock, a slow disk)
holds only the writers of its own group, and the database sees as many concurrent
transactions as before grouping, never more than one per request.

A committer may instead allow only ``max_writes`` group writes at once (receipts
do). A leader then waits for a free write with its group still open, so under load
groups grow (to ``max_weight``) rather than multiply, and a flood holds that many
pooled connections, never more.

A group's write fails or succeeds whole. When it fails with more than one writer in
it, each writer's work is run again alone, so one writer's bad request (an
idempotency key reused, say) never fails another's: each gets its own answer or its
own error, exactly as without grouping.

Locks and events are ``threading``'s: the eventlet and gevent workers monkey-patch
them into green ones, and under ``ASYNC_MODE=threading`` they are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


class _Ticket(Generic[Req, Res]):
    __slots__ = ("request", "done", "result", "error")

    def __init__(self, request: Req) -> None:
        self.request = request
        self.done = threading.Event()
        self.result: Res | None = None
        self.error: BaseException | None = None

    def settle(self, outcome: Res | BaseException) -> None:
        if isinstance(outcome, BaseException):
            self.error = outcome
        else:
            self.result = outcome


class _Group(Generic[Req, Res]):
    __slots__ = ("tickets", "weight")

    def __init__(self) -> None:
        self.tickets: list[_Ticket[Req, Res]] = []
        self.weight = 0


def _yield_once() -> None:
    time.sleep(0)  # monkey-patched: a switch to the hub, which runs every ready writer


class GroupCommit(Generic[Req, Res]):
    """``write(requests)`` runs a whole group in one transaction and returns one result
    per request, in order; a result that is an exception is raised to that writer
    alone. ``max_weight`` bounds a group (in rows, say): a writer that would push the
    open group past it opens the next one; a lone request heavier than that still
    goes, in a group of its own. ``max_writes``, when given, bounds the group writes
    under way at once."""

    def __init__(self, write: Callable[[list[Req]], Sequence[Res | BaseException]],
                 max_weight: int, gather: Callable[[], None] = _yield_once,
                 max_writes: int | None = None) -> None:
        self._write = write
        self._max_weight = max_weight
        self._gather = gather
        self._lock = threading.Lock()
        self._open: _Group[Req, Res] | None = None
        self._writes: AbstractContextManager = (
            threading.BoundedSemaphore(max_writes) if max_writes else nullcontext())

    def submit(self, request: Req, weight: int = 1) -> Res:
        ticket: _Ticket[Req, Res] = _Ticket(request)
        with self._lock:
            group = self._open
            lead = group is None or (group.weight + weight > self._max_weight
                                     and bool(group.tickets))
            if lead:
                group = self._open = _Group()
            group.tickets.append(ticket)
            group.weight += weight
        if lead:
            try:
                self._gather()
                with self._writes:  # the group stays open while it waits
                    self._close(group)
                    self._write_group(group.tickets)
            finally:
                self._close(group)
                self._settle_rest(group.tickets)
        else:
            ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]

    def _close(self, group: _Group[Req, Res]) -> None:
        with self._lock:
            if self._open is group:
                self._open = None  # closed: later writers open the next group

    @staticmethod
    def _settle_rest(tickets: list[_Ticket[Req, Res]]) -> None:
        for ticket in tickets:
            if ticket.result is None and ticket.error is None:
                # The leader was stopped before or during the write (its greenlet
                # killed, say): its followers must not wait for ever.
                ticket.error = RuntimeError("the group's write was interrupted")
            ticket.done.set()

    def _write_group(self, tickets: list[_Ticket[Req, Res]]) -> None:
        try:
            results = self._write([t.request for t in tickets])
        except Exception as exc:
            if len(tickets) == 1:
                tickets[0].error = exc
                return
            for ticket in tickets:  # one bad request must not fail the others
                self._write_alone(ticket)
            return
        for ticket, outcome in zip(tickets, results, strict=True):
            ticket.settle(outcome)

    def _write_alone(self, ticket: _Ticket[Req, Res]) -> None:
        try:
            (outcome,) = self._write([ticket.request])
        except Exception as exc:
            ticket.error = exc
            return
        ticket.settle(outcome)
