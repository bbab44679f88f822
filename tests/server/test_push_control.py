"""A user's control over pushes (issue 23), end to end: real gunicorn servers (eventlet
and gevent), the real local push service web-push-testing (it decrypts each push), a
scripted endpoint where a header must be read, and real Socket.IO clients.

- a preference that mutes push: stored and emitted, never pushed;
- a subscription turned off: the user's other one alone gets the push;
- quiet hours on a server whose wall clock reads 06:59:50 when it starts
  (tests/support/clocked_app.py): a push waits for 07:00, and one read meanwhile is
  dropped; a critical one ignores them;
- 20 notifications with one collapse_key within 2 s: one push, "and 19 more", while
  the socket and the inbox have all 20.

The servers, their VAPID keys and the timing (a push that must come arrives within
about 2 s; one that must not, checked after QUIET): tests/support/push_servers.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.support.push_servers import QUIET, auth, push_env, push_server, pushes, subscribe, user
from tests.support.push_service import (
    VapidKeys,
    b64url,
    push_service_fixture,  # noqa: F401
)
from tests.support.servers import ServerProcess, gunicorn, migrate, mint, post

pytestmark = [pytest.mark.server]

NIGHT = [{"start": "22:00", "end": "07:00"}]  # in UTC: these users set no time zone
# The clocked server's wall clock reads this when its worker loads the app: the
# night window ends WALL_TO_END seconds later.
WALL_START = "2026-12-07T06:59:50Z"
WALL_TO_END = 10.0


@pytest.fixture(scope="module", params=["eventlet", "gevent"])
def server(request, push_service, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server on the real clock; it may also push to a scripted endpoint, whose
    requests a test reads (headers)."""
    yield from push_server(tmp_path_factory.mktemp(f"control-{request.param}"), push_service,
                           request.param)


def start_clocked(tmp_path, push_service, worker: str) -> tuple[ServerProcess, float, float]:
    """A server whose wall clock reads WALL_START when its worker loads the app; with
    the monotonic times just before the start and once it answers: the window's end
    falls WALL_TO_END after a moment between the two."""
    env = push_env(tmp_path, push_service.origin, ASYNC_MODE=worker,
                   TEST_WALL_CLOCK_START=WALL_START)
    migrate(env)
    proc = gunicorn(tmp_path, env, worker=worker, app="tests.support.clocked_app:app")
    before = time.monotonic()
    proc.start()
    return proc, before, time.monotonic()


def prefer(server, user: str, **preferences) -> None:
    response = requests.put(server.url + "/api/preferences", json=preferences,
                            headers=auth(user), timeout=10)
    assert response.status_code == 200, response.text


def send(server, user: str, **fields) -> dict:
    """POST /api/notifications for one user; the answer's item."""
    response = post(server, {"user_id": user, "type": "comment", "title": "New comment",
                             "body": "Hello", **fields})
    assert response.status_code == 201, response.text
    return response.json()["notifications"][0]


def inbox(server, user: str) -> list[dict]:
    response = requests.get(server.url + "/api/notifications?limit=100", headers=auth(user),
                            timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["notifications"]


def suppressed(server) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("notifier_pushes_total{") and 'outcome="suppressed"' in line)


# -- preferences and devices ------------------------------------------------------------

def test_push_muted_by_preference_is_stored_and_emitted_but_not_pushed(server, push_service,
                                                                       clients):
    alice = user()
    _, client_hash = subscribe(server, push_service, alice)
    prefer(server, alice, types={"comment": {"push": False}})
    socket = clients()
    socket.connect(server.url, auth={"token": mint(alice)})
    muted = send(server, alice, push="always")
    assert muted["muted"] == ["push"] and muted["id"] is not None
    (live,) = socket.wait_for("notification")
    assert live["id"] == muted["id"]
    assert [n["id"] for n in inbox(server, alice)] == [muted["id"]]
    pushed = send(server, alice, type="mention", push="always")  # not muted: pushed
    assert "muted" not in pushed
    push_service.wait_for_messages(client_hash, 1, timeout=10)
    time.sleep(QUIET)
    assert [p["id"] for p in pushes(push_service, client_hash)] == [pushed["id"]]


def test_of_two_subscriptions_only_the_one_turned_on_gets_the_push(server, push_service):
    bob = user()
    phone, phone_hash = subscribe(server, push_service, bob)
    laptop, laptop_hash = subscribe(server, push_service, bob)
    response = requests.patch(server.url + f"/api/push/subscriptions/{laptop}",
                              json={"enabled": False}, headers=auth(bob), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == laptop and response.json()["enabled"] is False
    listed = requests.get(server.url + "/api/push/subscriptions", headers=auth(bob),
                          timeout=10).json()["subscriptions"]
    assert {s["id"]: s["enabled"] for s in listed} == {phone: True, laptop: False}
    nid = send(server, bob)["id"]  # push "auto", no socket: pushed after PUSH_AFTER
    (message,) = push_service.wait_for_messages(phone_hash, 1, timeout=10)
    assert json.loads(message)["id"] == nid
    time.sleep(QUIET)
    assert pushes(push_service, laptop_hash) == []
    assert len(push_service.messages(phone_hash)) == 1


def test_another_users_subscription_cannot_be_turned_off(server, push_service):
    owner, intruder = user(), user()
    sub_id, _ = subscribe(server, push_service, owner)
    response = requests.patch(server.url + f"/api/push/subscriptions/{sub_id}",
                              json={"enabled": False}, headers=auth(intruder), timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# -- quiet hours --------------------------------------------------------------------------

def test_a_critical_push_ignores_quiet_hours(server, push_service):
    """Quiet hours from an hour ago to an hour from now (UTC): the critical push comes at
    once, the other one waits."""
    carol = user()
    _, client_hash = subscribe(server, push_service, carol)
    now = datetime.now(UTC)
    prefer(server, carol, quiet_hours=[{"start": f"{now - timedelta(hours=1):%H:%M}",
                                        "end": f"{now + timedelta(hours=1):%H:%M}"}])
    send(server, carol, push="always")  # held until the window's end
    started = time.monotonic()
    critical = send(server, carol, push="always", critical=True)["id"]
    (message,) = push_service.wait_for_messages(client_hash, 1, timeout=10)
    assert json.loads(message)["id"] == critical
    assert time.monotonic() - started < 3
    time.sleep(QUIET)
    assert [p["id"] for p in pushes(push_service, client_hash)] == [critical]


def test_quiet_hours_defer_a_push_until_the_window_ends(tmp_path, push_service, worker):
    proc, before, ready = start_clocked(tmp_path, push_service, worker)
    try:
        dave = user()
        _, client_hash = subscribe(proc, push_service, dave)
        prefer(proc, dave, quiet_hours=NIGHT)
        sent_at = time.monotonic()
        assert sent_at < before + WALL_TO_END - 2, "the server took too long to start"
        nid = send(proc, dave, push="always")["id"]
        time.sleep(1.5)
        assert pushes(push_service, client_hash) == []  # "always" would have come by now
        (message,) = push_service.wait_for_messages(
            client_hash, 1, timeout=ready + WALL_TO_END + 4 - time.monotonic())
        arrived = time.monotonic()
    finally:
        proc.stop()
    assert json.loads(message)["id"] == nid
    # The wall clock read 07:00 between before + WALL_TO_END and ready + WALL_TO_END;
    # the dispatcher's next tick sends it.
    assert arrived >= before + WALL_TO_END, arrived - before
    assert arrived <= ready + WALL_TO_END + 4, arrived - ready


def test_a_deferred_push_read_meanwhile_is_dropped(tmp_path, push_service, worker):
    """Two users in the same quiet hours: the one who reads the notification on another
    device gets no push at the window's end; the other one gets theirs."""
    proc, before, ready = start_clocked(tmp_path, push_service, worker)
    try:
        erin, frank = user(), user()
        _, erin_hash = subscribe(proc, push_service, erin)
        _, frank_hash = subscribe(proc, push_service, frank)
        prefer(proc, erin, quiet_hours=NIGHT)
        prefer(proc, frank, quiet_hours=NIGHT)
        assert time.monotonic() < before + WALL_TO_END - 2, "the server took too long to start"
        read = send(proc, erin, push="always")["id"]
        kept = send(proc, frank, push="always")["id"]
        time.sleep(1.5)  # queued, deferred
        response = requests.post(proc.url + "/api/notifications/read", json={"ids": [read]},
                                 headers=auth(erin), timeout=10)
        assert response.status_code == 200, response.text
        suppressed_before = suppressed(proc)
        (message,) = push_service.wait_for_messages(
            frank_hash, 1, timeout=ready + WALL_TO_END + 4 - time.monotonic())
        assert json.loads(message)["id"] == kept
        time.sleep(1)  # erin's send fell due with frank's, and was dropped at its claim
        assert pushes(push_service, erin_hash) == []
        assert suppressed(proc) - suppressed_before >= 1
    finally:
        proc.stop()


# -- collapsed pushes ---------------------------------------------------------------------

def test_twenty_with_one_collapse_key_make_one_push_and_all_twenty_stay(server, push_service,
                                                                        clients):
    """20 in 2 s, PUSH_COLLAPSE_SECONDS at its default (5): one push, the newest, saying
    "and 19 more", with the key's Topic; the socket and the inbox have all 20."""
    grace = user()
    _, client_hash = subscribe(server, push_service, grace)
    browser = VapidKeys.generate()
    scripted = requests.post(server.url + "/api/push/subscriptions", headers=auth(grace),
                             json={"endpoint": server.scripted.endpoint(f"/push/{grace}"),
                                   "expirationTime": None,
                                   "keys": {"p256dh": browser.public,
                                            "auth": b64url(b"0123456789abcdef")}}, timeout=10)
    assert scripted.status_code == 201, scripted.text
    socket = clients()  # sends no receipts: the push is not suppressed
    socket.connect(server.url, auth={"token": mint(grace)})
    key = "post:42"
    started = time.monotonic()
    ids = []
    for n in range(20):
        ids.append(send(server, grace, push="always", collapse_key=key,
                        body=f"comment {n}")["id"])
        time.sleep(max(0.0, started + (n + 1) * 0.1 - time.monotonic()))
    assert time.monotonic() - started < 3
    (message,) = push_service.wait_for_messages(client_hash, 1, timeout=15)
    assert time.monotonic() - started >= 5  # the collapse window, from the first
    pushed = json.loads(message)
    assert pushed["id"] == ids[-1] and pushed["folded"] == 19
    assert pushed["body"] == "comment 19\nand 19 more"
    time.sleep(QUIET)
    assert len(push_service.messages(client_hash)) == 1
    (request,) = [r for r in server.scripted.received if r.path == f"/push/{grace}"]
    topic = base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).decode()[:32]
    assert request.headers["topic"] == topic
    assert {n["id"] for n in socket.of("notification")} == set(ids)
    assert sorted(n["id"] for n in inbox(server, grace)) == sorted(ids)
