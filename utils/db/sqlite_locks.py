"""Waiting for SQLite's write lock without holding the whole worker.

SQLite lets one connection write at a time, across processes (``flask prune``,
``flask notify``, another server). sqlite3 waits for the lock in its C busy handler,
and under eventlet or gevent that wait blocks the hub: every request and socket of
the worker stalls with it. So in a process that runs a hub sqlite3 does not wait
(``GREEN_BUSY_TIMEOUT_SECONDS``). A write transaction that finds the database
locked is rolled back and run again whole, after a sleep (``time.sleep``, which the
workers' monkey-patching turns into a green sleep) with back-off, until
``WRITE_DEADLINE_SECONDS`` have passed since it started; then the last "database is
locked" error propagates: HTTP answers 503 ``database_unavailable``, a socket event
acks it, the CLI prints one line. Waiting writers retry one at a time.

Processes without a hub (the CLI, migrations, ``ASYNC_MODE=threading``) block only
themselves, so sqlite3 keeps waiting up to the deadline in its own busy handler.

Exactly once: a statement or commit that fails with SQLITE_BUSY has committed
nothing (SQLite commits atomically, and a busy COMMIT leaves the transaction open),
and the rollback discards it, so running the whole unit of work again cannot store
anything twice. Reads need none of this: under WAL they do not wait for a writer.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError

from utils.extensions import db

log = logging.getLogger(__name__)

# sqlite3 never waits in C where a hub runs: with 200 writers waiting on a held lock,
# a busy timeout of 1 ms already stalled /healthz for 0.6 s, 5 ms for 2 s (each
# attempt blocks the hub that long); every wait is a green sleep instead.
GREEN_BUSY_TIMEOUT_SECONDS = 0.0
# Longest a write waits for the lock in all (the busy timeout sqlite3 had before).
WRITE_DEADLINE_SECONDS = 15.0
FIRST_BACKOFF_SECONDS = 0.01
MAX_BACKOFF_SECONDS = 0.25
SQLITE_PRIMARY_CODE_MASK = 0xFF  # extended codes such as SQLITE_BUSY_SNAPSHOT

T = TypeVar("T")

# Writers that found the database locked queue here, and one at a time retries: the
# retries then cost the hub what one writer's do, however many are waiting. (Under
# the workers' monkey-patching threading.Lock is a green lock.) Units do not nest.
_waiting_room = threading.Lock()


def runs_a_hub() -> bool:
    """Whether eventlet or gevent patched this process, so a blocking C call stalls
    every greenthread (read from sys.modules: importing either here would be wrong)."""
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("time"):
        return True
    gevent_monkey = sys.modules.get("gevent.monkey")
    return bool(gevent_monkey is not None and gevent_monkey.is_module_patched("time"))


def busy_timeout() -> float:
    """Seconds sqlite3 may wait for a lock in its C busy handler, in this process."""
    return GREEN_BUSY_TIMEOUT_SECONDS if runs_a_hub() else WRITE_DEADLINE_SECONDS


def is_locked(exc: BaseException) -> bool:
    """A SQLite "database is locked" (SQLITE_BUSY and its extended codes)."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    return (isinstance(exc, OperationalError) and isinstance(orig, sqlite3.OperationalError)
            and code is not None and code & SQLITE_PRIMARY_CODE_MASK == sqlite3.SQLITE_BUSY)


def retry_when_locked(unit: Callable[..., T]) -> Callable[..., T]:
    """Decorate a function that is one whole write transaction, on ``db.session`` or on
    a connection it opens itself (``with db.engine.begin()``, which rolls back on the
    error): it starts with nothing pending and commits before it returns, and its arguments
    survive a second call (no iterators). When SQLite is locked, the transaction is
    rolled back and the function runs again; without contention this costs one
    clock read, and never a query."""

    @wraps(unit)
    def run(*args: Any, **kwargs: Any) -> T:
        started = time.monotonic()
        try:
            return unit(*args, **kwargs)
        except OperationalError as exc:
            if not is_locked(exc):
                raise
            return _run_again(unit, args, kwargs, started, exc)

    return run


def _run_again(unit: Callable[..., T], args: tuple, kwargs: dict, started: float,
               error: OperationalError) -> T:
    db.session.rollback()
    deadline = started + WRITE_DEADLINE_SECONDS
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not _waiting_room.acquire(timeout=remaining):
        raise error
    try:
        return _retry_until(deadline, unit, args, kwargs, started, error)
    finally:
        _waiting_room.release()


def _retry_until(deadline: float, unit: Callable[..., T], args: tuple, kwargs: dict,
                 started: float, error: OperationalError) -> T:
    backoff = FIRST_BACKOFF_SECONDS
    attempts = 1
    while True:
        attempts += 1
        try:
            result = unit(*args, **kwargs)
        except OperationalError as exc:
            if not is_locked(exc):
                raise
            error = exc
            db.session.rollback()
        else:
            log.info("a write (%s) waited %.2f s for the SQLite write lock, %d attempts",
                     unit.__name__, time.monotonic() - started, attempts)
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise error
        # Jittered, so the waiting writers of several processes do not retry in step.
        time.sleep(min(remaining, random.uniform(backoff / 2, backoff)))
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
