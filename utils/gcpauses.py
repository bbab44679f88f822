"""Garbage-collector pause recording, switched on by an environment variable.

``GC_PAUSE_LOG=/path/file`` makes a worker append one JSON line per notable
collection to that file: every generation-2 pass, and any pass that is the longest
so far or takes 1 ms or more. The benchmark reads the file; nothing else uses it.
Unset (the default), no callback is installed, so it costs nothing.

Lines are written with one ``os.write`` on an O_APPEND descriptor, so a worker that
is killed loses nothing already recorded.
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any, Mapping

ENV_VAR = "GC_PAUSE_LOG"
NOTABLE_SECONDS = 0.001


class PauseRecorder:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._started = 0.0
        self._longest = 0.0
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
                           "collected": info.get("collected", 0), "n": self.count})
        os.write(self._fd, (line + "\n").encode())


def install_from_env(env: Mapping[str, str] = os.environ) -> PauseRecorder | None:
    """Install the recorder when ``GC_PAUSE_LOG`` names a file; otherwise do nothing."""
    path = env.get(ENV_VAR)
    if not path:
        return None
    recorder = PauseRecorder(path)
    gc.callbacks.append(recorder)
    return recorder
