"""gunicorn's worker class and ASYNC_MODE must agree (issue 20, finding 12): a
mismatch stops the start with one line and exit 4, so the master halts instead of
serving a process whose background work fails. Real gunicorn, both directions."""

from __future__ import annotations

import pytest

from tests.support.servers import migrate, refused_start, server_env

pytestmark = [pytest.mark.server]


@pytest.mark.parametrize(("worker", "async_mode"), [("gevent", "eventlet"),
                                                    ("eventlet", "gevent")])
def test_a_worker_class_that_disagrees_with_async_mode_stops_the_start(
        tmp_path, worker, async_mode):
    env = server_env(tmp_path, ASYNC_MODE=async_mode)
    migrate(env)
    line = refused_start(env, worker, "ASYNC_MODE is")
    assert f"ASYNC_MODE is {async_mode} but this process runs on {worker}" in line
