"""What a production start tells its operator (issue 24, findings 3 and 6): every
missing setting in one refused start, and one line when push is off."""

from __future__ import annotations

import pytest
import requests

from tests.support.servers import (
    free_port,
    gunicorn,
    gunicorn_argv,
    migrate,
    run_command,
    server_env,
)

pytestmark = [pytest.mark.server]


@pytest.mark.parametrize("worker", ["eventlet", "gevent"])
def test_a_production_start_names_every_missing_setting_at_once(tmp_path, worker):
    env = server_env(tmp_path, ASYNC_MODE=worker)
    for name in ("JWT_SECRET_KEY", "FRONTEND_URLS", "DATABASE_URL"):
        del env[name]
    result = run_command(gunicorn_argv(worker, free_port()), env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "configuration error: 3 settings stop the start:" in output
    problems = [line for line in output.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3, output
    for name in ("JWT_SECRET_KEY", "FRONTEND_URLS", "DATABASE_URL"):
        assert any(name in line for line in problems), (name, output)
    assert "Traceback" not in output


@pytest.mark.parametrize("worker", ["eventlet", "gevent"])
def test_push_off_in_production_says_so_once_and_its_routes_are_4xx(tmp_path, worker):
    from tests.support.servers import mint

    env = server_env(tmp_path, ASYNC_MODE=worker, VAPID_PRIVATE_KEY="")
    migrate(env)
    server = gunicorn(tmp_path, env, worker=worker).start()
    try:
        assert requests.get(server.url + "/api/push/config", timeout=5).json()["enabled"] \
            is False
        headers = {"Authorization": f"Bearer {mint('alice')}"}
        test_push = requests.post(server.url + "/api/push/test", headers=headers, timeout=10)
        assert test_push.status_code == 404
        assert test_push.json()["error"]["code"] == "push_disabled"
    finally:
        server.stop()
    lines = [line for line in server.output().splitlines() if "Web Push is off" in line]
    assert len(lines) == 1, server.output()
    assert "VAPID_PRIVATE_KEY" in lines[0] and "vapid-keys" in lines[0]
