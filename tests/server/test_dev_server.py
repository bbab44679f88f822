"""``python app.py``: the development server on a fresh machine, no environment set."""

from __future__ import annotations

import os
import sys

import pytest
import requests

from tests.support.servers import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.server


def dev_server(tmp_path, name: str) -> ServerProcess:
    env = {key: value for key, value in os.environ.items()
           if key not in ("APP_ENV", "RAILWAY_ENVIRONMENT", "JWT_SECRET_KEY", "NOTIFY_API_KEY",
                          "FRONTEND_URLS", "DATABASE_URL", "REDIS_URL", "ASYNC_MODE")}
    port = free_port()
    env.update({"PORT": str(port), "INSTANCE_PATH": str(tmp_path / "instance"),
                "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"})
    return ServerProcess([sys.executable, "app.py"], env, port, tmp_path / f"{name}.log",
                         cwd=ROOT)


def test_python_app_py_runs_eventlet_patched_with_generated_secrets(tmp_path):
    server = dev_server(tmp_path, "first").start()
    try:
        health = requests.get(server.url + "/healthz", timeout=5).json()
        assert health["async_mode"] == "eventlet"
        assert health["monkey_patched"] is True
        assert health["environment"] == "development"
        key = (tmp_path / "instance" / "notify_api_key.txt").read_text().strip()
        assert server.output().count(f"NOTIFY_API_KEY={key}") == 1
        assert (tmp_path / "instance" / "notifications.db").exists()
        own = requests.get(server.url + "/socket.io/?EIO=4&transport=polling",
                           headers={"Origin": server.url}, timeout=5)
        front = requests.get(server.url + "/socket.io/?EIO=4&transport=polling",
                             headers={"Origin": "http://localhost:3000"}, timeout=5)
        foreign = requests.get(server.url + "/socket.io/?EIO=4&transport=polling",
                               headers={"Origin": "http://localhost:4000"}, timeout=5)
        assert (own.status_code, front.status_code, foreign.status_code) == (200, 200, 400)
        created = requests.post(server.url + "/api/notifications", timeout=5,
                                headers={"Authorization": f"Bearer {key}"},
                                json={"user_id": "alice", "type": "t", "title": "hello"})
        assert created.status_code == 201
    finally:
        server.stop()
    again = dev_server(tmp_path, "second").start()
    try:
        assert "NOTIFY_API_KEY=" not in again.output()
        assert (tmp_path / "instance" / "notify_api_key.txt").read_text().strip() == key
    finally:
        again.stop()


@pytest.mark.parametrize("async_mode", ["eventlet", "gevent"])
def test_a_second_python_app_py_on_the_same_port_exits_with_one_line(tmp_path, async_mode):
    """eventlet's listen() sets SO_REUSEPORT by default, so a second server used to bind
    the same port and the kernel spread connections over both: sessions broke."""
    first = dev_server(tmp_path, "owner")
    first.env["ASYNC_MODE"] = async_mode
    first.start()
    try:
        second = dev_server(tmp_path, "intruder")
        second.env.update(ASYNC_MODE=async_mode, PORT=str(first.port))
        second.port = first.port
        second.start(wait=False)
        assert second.proc.wait(30) == 1
        lines = [line for line in second.output().splitlines() if line.strip()]
        assert lines[-1] == (f"port {first.port} is already in use (another server?): "
                             "stop it, or set PORT")
        assert "Traceback" not in second.output()
        health = requests.get(first.url + "/healthz", timeout=5).json()
        assert health["async_mode"] == async_mode
        assert "eventlet is deprecated" in first.output() or async_mode == "gevent"
        assert "Eventlet is deprecated. It is currently" not in first.output()
    finally:
        first.stop()
