"""Garbage-collector pause recording, switched on by an environment variable.

``GC_PAUSE_LOG=/path/file`` makes a worker append one JSON line per notable
collection to that file: every generation-2 pass, and any pass that is the longest
so far or takes 1 ms or more. The benchmark reads the file; nothing else uses it.
Unset (the default), no callback is installed, so it costs nothing.

Lines are written with one ``os.write`` on an O_APPEND descriptor, so a worker that
is killed loses nothing already recorded. With the recorder on, SIGUSR2 makes the
worker run one full collection (marked ``forced``), so the benchmark can time a
whole pass over every live object at a given number of sockets.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

ENV_VAR = "GC_PAUSE_LOG"
NOTABLE_SECONDS = 0.001


class PauseRecorder:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._started = 0.0
        self._longest = 0.0
        self._forced = False
        self.count = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.count += 1
        generation = info.get("generation", 0)
        if generation == 2 or pause >= NOTABLE_SECONDS or pause > self._longest:
            self._longest = max(self._longest, pause)
            self._write(generation, pause, info)

    def _write(self, generation: int, pause: float, info: dict[str, Any]) -> None:
        line = json.dumps({"t": time.time(), "gen": generation, "ms": round(pause * 1000, 3),
                           "collected": info.get("collected", 0), "n": self.count,
                           "forced": self._forced})
        os.write(self._fd, (line + "\n").encode())

    def collect_now(self, *_signal: object) -> None:
        self._forced = True
        try:
            gc.collect()
        finally:
            self._forced = False
        self._census()

    def _census(self) -> None:
        """What the collector has to walk: tracked objects by type (bench diagnostics)."""
        tracked = gc.get_objects()
        kinds = Counter(type(o).__name__ for o in tracked).most_common(12)
        line = json.dumps({"t": time.time(), "census": True, "tracked": len(tracked),
                           "frozen": gc.get_freeze_count(), "top": kinds})
        os.write(self._fd, (line + "\n").encode())


def install_from_env(env: Mapping[str, str] = os.environ) -> PauseRecorder | None:
    """For servers that are not this app (the bench's stock server): ``GC_PAUSE_LOG``."""
    return install(env.get(ENV_VAR))


def install(path: str | None) -> PauseRecorder | None:
    """Install the recorder when ``path`` names a file; otherwise do nothing."""
    if not path:
        return None
    recorder = PauseRecorder(path)
    gc.callbacks.append(recorder)
    signal.signal(signal.SIGUSR2, recorder.collect_now)
    return recorder
