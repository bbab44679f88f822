"""Real servers with Web Push on, for the end-to-end push tests (tests/server/): the
VAPID keys they push with, the timing they rely on, a server per worker class that
pushes to web-push-testing and to a scripted endpoint, and what a test does there as
a user.

PUSH_AFTER is 1 s and the dispatcher ticks every second, so a push that must come
arrives within about 2 s, and one that must not is checked after QUIET (4 s).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import requests

from tests.support.push_service import PushService, ScriptedEndpoint, VapidKeys, browser_json
from tests.support.servers import ServerProcess, gunicorn, migrate, mint, server_env

PUSH_AFTER = 1.0
QUIET = 4.0  # long enough for a push that was going to come
KEYS = VapidKeys.generate()


def push_env(tmp: Path, *origins: str, **overrides: str) -> dict[str, str]:
    """server_env with Web Push on (KEYS), to push services at ``origins`` only."""
    settings = {"VAPID_PRIVATE_KEY": KEYS.private, "VAPID_SUBJECT": "mailto:push@example.com",
                "WEB_PUSH_ENDPOINT_ORIGINS": ",".join(origins), "PUSH_AFTER": str(PUSH_AFTER)}
    return server_env(tmp, **{**settings, **overrides})


def push_server(tmp: Path, push_service: PushService, worker: str) -> Iterator[ServerProcess]:
    """For a fixture to ``yield from``: a server on ``worker`` that pushes to
    ``push_service`` and to a scripted endpoint (``.scripted``, whose requests a test
    reads); both stopped afterwards."""
    scripted = ScriptedEndpoint(then=201)
    env = push_env(tmp, push_service.origin, scripted.origin, ASYNC_MODE=worker)
    migrate(env)
    proc = gunicorn(tmp, env, worker=worker).start()
    proc.scripted = scripted
    yield proc
    proc.stop()
    scripted.close()


def user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(user)}"}


def subscribe(server: ServerProcess, push_service: PushService, user: str) -> tuple[int, str]:
    """A new browser subscription for ``user`` on the push service: its id and its
    client hash."""
    sub = push_service.subscribe(KEYS.public)
    response = requests.post(server.url + "/api/push/subscriptions", json=browser_json(sub),
                             headers=auth(user), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"], sub["clientHash"]


def pushes(push_service: PushService, client_hash: str) -> list[dict]:
    """What the push service received for one subscription, decrypted."""
    return [json.loads(m) for m in push_service.messages(client_hash)]
