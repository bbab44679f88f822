"""Helpers for the real-browser tests: the stand-in front end's static server, event
reading over WebDriver, and the production server the pages talk to (and a fixture
of one as deployed, for the modules that need no other)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.support.browser.webdriver import Browser
from tests.support.client_package import DIST, StaticSite
from tests.support.servers import ROOT, VENV_BIN, ServerProcess, gunicorn, migrate, server_env

ARTIFACTS = ROOT / "test-artifacts"
PAGES = ROOT / "tests" / "browser" / "pages"
CLIENT_DIST = ROOT / "node_modules" / "socket.io-client" / "dist"
# What the stand-in front end serves: its own page, the client package's build
# (client/dist, which the page's import map names "@notification-backend/client", as
# a bundler resolves it from node_modules), and socket.io-client from node_modules.
PAGE_FILES = {
    "/harness.html": PAGES / "harness.html",
    "/harness.js": PAGES / "harness.js",
    "/client/index.js": DIST / "index.js",
    # The front end's own copy of the package's service worker (its "./sw" export), as
    # the README tells it to serve.
    "/notifications-sw.js": DIST / "notifications-sw.js",
    "/vendor/socket.io.min.js": CLIENT_DIST / "socket.io.min.js",
}
REPORT: list[str] = []  # which transport carried what; printed at the end of the run


class PageServer(StaticSite):
    """The stand-in front end: one origin per instance."""

    def __init__(self) -> None:
        super().__init__(PAGE_FILES)


def open_page(browser: Browser, origin: str) -> None:
    browser.get(f"{origin}/harness.html")
    browser.wait_for("window.harness && window.harness.ready", what="the test page")


def events(browser: Browser, name: str) -> list[dict[str, Any]]:
    return browser.run("return window.harness.named(arguments[0]);", name)


def wait_event(browser: Browser, name: str, count: int = 1, timeout: float = 15,
               match: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Wait until ``count`` events ``name`` (whose data has ``match``'s items) arrived;
    returns every event of that name."""
    check = json.dumps(match or {})
    browser.wait_for(
        "window.harness.named(arguments[0]).filter((e) => Object.entries(JSON.parse("
        "arguments[2])).every(([k, v]) => e.data && e.data[k] === v)).length >= arguments[1]",
        name, count, check, timeout=timeout, what=f"{count} x {name} {match or ''}")
    return events(browser, name)


def new_user(browser: Browser, label: str) -> str:
    return f"{browser.engine.name}-{label}-{uuid.uuid4().hex[:6]}"


class NotifyServer:
    """A production gunicorn server (``worker``: eventlet or gevent), and the means to
    talk to it."""

    def __init__(self, tmp: Path, origin: str, worker: str = "eventlet",
                 **overrides: str) -> None:
        self.env = server_env(tmp, FRONTEND_URLS=origin, ASYNC_MODE=worker, **overrides)
        migrate(self.env)
        self.tmp = tmp
        self.worker = worker
        self.process: ServerProcess = gunicorn(tmp, self.env, worker=worker).start()
        self.url = self.process.url
        self.port = self.process.port

    def token(self, user_id: str, ttl: int = 3600) -> str:
        now = int(time.time())
        claims = {"sub": user_id, "iat": now - (0 if ttl > 0 else 3600), "exp": now + ttl}
        return jwt.encode(claims, self.env["JWT_SECRET_KEY"], algorithm="HS256")

    def notify(self, user_id: str, title: str, **fields: Any) -> int:
        response = requests.post(
            self.url + "/api/notifications",
            json={"user_id": user_id, "type": "browser-test", "title": title, **fields},
            headers={"Authorization": f"Bearer {self.env['NOTIFY_API_KEY']}"}, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()["notifications"][0]["id"]

    def inbox(self, user_id: str) -> dict[int, dict[str, Any]]:
        """The user's newest notifications by id, as GET /api/notifications gives them."""
        response = requests.get(self.url + "/api/notifications?limit=100", timeout=10,
                                headers={"Authorization": f"Bearer {self.token(user_id)}"})
        assert response.status_code == 200, response.text
        return {n["id"]: n for n in response.json()["notifications"]}

    def notify_offline(self, user_id: str, title: str) -> int:
        """While the server is down: store through the CLI, as another process would."""
        out = subprocess.run(
            [str(VENV_BIN / "flask"), "--app", "app", "notify", user_id, "--type",
             "browser-test", "--title", title],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])["notifications"][0]["id"]

    def crash(self) -> None:
        """The whole process group goes at once, as on a host restart or an OOM kill."""
        self.process.kill()
        self.process.stop()

    def restart(self) -> None:
        self.process = gunicorn(self.tmp, self.env, worker=self.worker, port=self.port,
                                name="restarted").start()

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module", name="production_server")
def production_server_fixture(tmp_path_factory, page_origin) -> Iterator[NotifyServer]:
    """``production_server``: production as deployed, nothing overridden (no minting on
    a page, Web Push off: no VAPID key), one per module. A test module imports
    ``production_server_fixture  # noqa: F401``."""
    instance = NotifyServer(tmp_path_factory.mktemp("production-server"), page_origin)
    yield instance
    instance.stop()
