"""gunicorn.conf.py raises the open-file limit, so one worker can hold 10k sockets
even where the container starts it with a soft limit of 1024."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import gunicorn, migrate, server_env

pytestmark = [pytest.mark.server]


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line")


def test_worker_soft_open_file_limit_is_raised_to_the_hard_limit(tmp_path, monkeypatch):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("hard limit too low to show a raise")
    env = server_env(tmp_path)
    migrate(env)
    server = gunicorn(tmp_path, env)
    # Start the server the way a stingy container would: soft limit 1024.
    original_popen = subprocess.Popen

    def popen_with_low_limit(*args, **kwargs):
        kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                          (1024, hard))
        return original_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen_with_low_limit)
    server.start()
    monkeypatch.undo()
    try:
        [worker] = server.worker_pids()
        expected = hard if hard != resource.RLIM_INFINITY else 65536
        assert _soft_nofile(worker) >= min(expected, 10_000) > 1024
    finally:
        server.stop()
