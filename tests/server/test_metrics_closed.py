"""/metrics is closed by default in production (issue 20, finding 11): without
METRICS_TOKEN it answers 403 metrics_closed and the start-up log says so in one
line; METRICS_PUBLIC=1 opens it; with a token it needs the token. Real gunicorn."""

from __future__ import annotations

import time

import pytest
import requests

from tests.support.servers import gunicorn, migrate, server_env

pytestmark = [pytest.mark.server]

LINE = "/metrics is closed (403)"


def start(tmp_path, **env):
    tmp_path.mkdir(exist_ok=True)
    settings = server_env(tmp_path, **env)
    migrate(settings)
    return gunicorn(tmp_path, settings).start()


def test_production_without_a_token_closes_metrics_and_says_so_once(tmp_path):
    server = start(tmp_path, METRICS_PUBLIC="0")
    try:
        response = requests.get(server.url + "/metrics", timeout=5)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "metrics_closed"
        assert "notifier_" not in response.text
        time.sleep(0.5)
        assert server.output().count(LINE) == 1, server.output()
    finally:
        server.stop()


def test_metrics_public_opens_it_and_a_token_guards_it(tmp_path):
    public = start(tmp_path / "public", METRICS_PUBLIC="1")
    try:
        response = requests.get(public.url + "/metrics", timeout=5)
        assert response.status_code == 200 and "notifier_" in response.text
        assert LINE not in public.output()
    finally:
        public.stop()
    guarded = start(tmp_path / "guarded", METRICS_PUBLIC="0", METRICS_TOKEN="m" * 32)
    try:
        assert requests.get(guarded.url + "/metrics", timeout=5).status_code == 401
        ok = requests.get(guarded.url + "/metrics", timeout=5,
                          headers={"Authorization": "Bearer " + "m" * 32})
        assert ok.status_code == 200 and "notifier_" in ok.text
        assert LINE not in guarded.output()
    finally:
        guarded.stop()
