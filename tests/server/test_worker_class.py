"""gunicorn's worker class and ASYNC_MODE must agree (issue 20, finding 12): a
mismatch stops the start with one line and exit 4, so the master halts instead of
serving a process whose background work fails. Real gunicorn, both directions."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.servers import VENV_BIN, free_port, migrate, server_env

pytestmark = [pytest.mark.server]


@pytest.mark.parametrize(("worker", "async_mode"), [("gevent", "eventlet"),
                                                    ("eventlet", "gevent")])
def test_a_worker_class_that_disagrees_with_async_mode_stops_the_start(
        tmp_path, worker, async_mode):
    env = server_env(tmp_path, ASYNC_MODE=async_mode)
    migrate(env)
    argv = [str(VENV_BIN / "gunicorn"), "--worker-class", worker, "-w", "1",
            "--bind", f"127.0.0.1:{free_port()}", "app:app"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    lines = [line for line in output.splitlines() if "ASYNC_MODE is" in line]
    assert len(lines) == 1, output
    assert f"ASYNC_MODE is {async_mode} but this process runs on {worker}" in lines[0]
    assert "Traceback" not in output
