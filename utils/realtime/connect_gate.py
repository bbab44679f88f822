"""How many Socket.IO connects may use the database at once.

A connect reads the user's unread count and, with ``last_id``, replays what was
missed: one pooled database connection for a few milliseconds. Without a bound, a
reconnect wave (every socket of a node at once, after a restart or an outage) asks
the pool for a connection per connect; past ``pool_size + max_overflow`` the rest
wait ``pool_timeout`` and fail, their clients retry, and the wave feeds itself (issue
20: 540 "QueuePool limit … reached" in one soak run).

The gate lets ``capacity`` connects (less than the pool holds, so HTTP requests and
background tasks still find a connection) do their database work at a time. A
connect that cannot get a slot within ``wait`` seconds is refused with the retryable
code ``server_busy`` and a ``retry_after`` hint, randomised so that the clients
refused together do not come back together.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask_socketio import ConnectionRefusedError

BUSY_CODE = "server_busy"


class ConnectGate:
    def __init__(self, capacity: int, wait: float, retry_after: tuple[float, float] = (1.0, 5.0),
                 jitter: random.Random | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.wait = wait
        self.retry_after = retry_after
        self._slots = threading.BoundedSemaphore(capacity)
        self._random = jitter or random.Random()
        self._lock = threading.Lock()
        self.in_use = 0
        self.refused = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a slot for the block, or raise ConnectionRefusedError(server_busy)."""
        if not self._slots.acquire(timeout=self.wait):
            with self._lock:
                self.refused += 1
            low, high = self.retry_after
            raise ConnectionRefusedError("unavailable", {
                "code": BUSY_CODE, "retry_after": round(self._random.uniform(low, high), 1)})
        with self._lock:
            self.in_use += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_use -= 1
            self._slots.release()
