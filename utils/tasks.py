"""A sweep: one background task per process that wakes every ``interval`` seconds,
started the first time it is needed. One task, however many sockets it looks after."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Sweep:
    interval: float = 1.0

    def __init__(self, start_task: Callable[..., object], sleep: Callable[[float], None]):
        self._start_task = start_task
        self._sleep = sleep
        self._started = False
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        if self._started:
            return
        with self._lock:
            if not self._started:
                self._started = True
                self._start_task(self._run)

    def sweep_once(self) -> int:
        """One pass; returns how many items it acted on."""
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            self._sleep(self.interval)
            self.sweep_once()
