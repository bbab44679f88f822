"""Read-rate limits in bytes per second, so no client can keep the hub busy.

A WebSocket reader in eventlet or gevent never yields while data is waiting, and
every byte it reads costs CPU (unmasking, UTF-8 checks, parsing) on the one worker
that carries every user. ``ThrottledSocket`` stands in for the connection's socket
and pauses the reader, cooperatively, once the connection has read more than its
budget: the client is slowed down by TCP back-pressure and everyone else keeps the
hub. Polling POSTs are charged to their Engine.IO session the same way
(utils/edge/eio_guard.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

# A polling POST that would have to wait longer than this is refused instead (429):
# waiting requests hold their bodies in memory.
MAX_POLL_WAIT = 5.0
# Sessions idle this long lose their polling budget (it is full again by then anyway).
IDLE_BUDGET_SECONDS = 60.0
# How often a charge looks for budgets of sessions that ended or went idle.
PRUNE_EVERY_SECONDS = 10.0


class ByteBudget:
    """A token bucket of bytes: ``rate`` a second, up to ``burst`` at once."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def spend(self, size: int, now: float) -> float:
        """Charge ``size`` bytes; returns how long to wait before reading more."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class ThrottledSocket:
    """A socket whose reads are charged to a ByteBudget; everything else passes through."""

    def __init__(self, sock: Any, budget: ByteBudget, sleep: Callable[[float], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sock, self._budget, self._sleep, self._clock = sock, budget, sleep, clock

    def _charge(self, size: int) -> None:
        wait = self._budget.spend(size, self._clock())
        if wait > 0:
            self._sleep(wait)

    def recv(self, bufsize: int, *flags: int) -> bytes:
        data = self._sock.recv(bufsize, *flags)
        self._charge(len(data))
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, *flags: int) -> int:
        size = self._sock.recv_into(buffer, nbytes, *flags)
        self._charge(size)
        return size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class SessionBudgets:
    """Polling budgets per Engine.IO session id, for sessions Engine.IO holds.

    The caller charges only a session ``alive`` says is open (utils/edge/eio_guard.py),
    so a made-up sid never gets a budget. A budget goes when its session ends: at once
    through ``forget``, or at the next prune (a charge, at most every
    PRUNE_EVERY_SECONDS) once ``alive`` says no or it has been idle for
    IDLE_BUDGET_SECONDS. Before, only idleness counted, checked once a minute from a
    charge: after the last POST nothing was ever dropped (issue 20, finding 8)."""

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic,
                 alive: Callable[[str], bool] = lambda sid: True) -> None:
        self.rate, self.burst, self.clock, self.alive = rate, burst, clock, alive
        self._budgets: dict[str, ByteBudget] = {}
        self._pruned = clock()
        self._lock = threading.Lock()

    def charge(self, sid: str, size: int) -> float:
        """Charge a POST body to its session; returns how long it must wait."""
        now = self.clock()
        with self._lock:
            budget = self._budgets.get(sid)
            if budget is None:
                budget = self._budgets[sid] = ByteBudget(self.rate, self.burst, now)
            wait = budget.spend(size, now)
            if now - self._pruned > PRUNE_EVERY_SECONDS:
                self._prune(now)
        return wait

    def forget(self, sid: str) -> None:
        """Drop a session's budget: it has ended."""
        with self._lock:
            self._budgets.pop(sid, None)

    def __len__(self) -> int:
        return len(self._budgets)

    def _prune(self, now: float) -> None:
        self._pruned = now
        gone = [sid for sid, b in self._budgets.items()
                if now - b.stamp > IDLE_BUDGET_SECONDS or not self.alive(sid)]
        for sid in gone:
            del self._budgets[sid]
