"""Child processes our tools start (the bench's servers, the tests' servers, proxies
and browsers): each in a process group of its own, and ended through that group,
so nothing we did not start is ever signalled."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import IO, Any


def start_group(argv: list[str], log: IO[bytes], **popen: Any) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new process group, its output into ``log``."""
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, **popen)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the group ``proc`` leads, if it still runs."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def stop_group(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """SIGTERM the group; SIGKILL it after ``timeout`` seconds; returns the exit code."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode
