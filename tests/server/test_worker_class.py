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


@pytest.mark.parametrize("worker", ["eventlet", "gevent"])
def test_a_healthy_start_logs_one_deprecation_line_and_no_glued_lines(tmp_path, worker):
    """Issue 24, finding 9: gunicorn's own eventlet deprecation WARNING is filtered
    (ours names the way out), the schema check logs nothing on a migrated database,
    and a WebSocket the client drops leaves no raw eventlet text on a log line."""
    import time

    import websocket

    from tests.support.servers import gunicorn

    env = server_env(tmp_path, ASYNC_MODE=worker)
    migrate(env)
    server = gunicorn(tmp_path, env, worker=worker).start()
    try:
        for _ in range(3):
            ws = websocket.create_connection(
                server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                origin="http://localhost:3000")
            ws.recv()
            ws.sock.close()  # gone without a close frame
        time.sleep(1)
    finally:
        server.stop()
    lines = server.output().splitlines()
    deprecation = [line for line in lines if "deprecat" in line.lower()]
    assert len(deprecation) == (1 if worker == "eventlet" else 0), deprecation
    assert not [line for line in lines if "alembic" in line], lines
    assert not [line for line in lines if "socket shutdown error" in line], lines
