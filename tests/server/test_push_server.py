"""Web Push end to end: real gunicorn servers (eventlet and gevent), the real local
push service from the npm package web-push-testing (it checks the VAPID JWT and the
TTL, decrypts each push and can expire a subscription), real Socket.IO clients, and
PostgreSQL for two nodes sharing the work.

PUSH_AFTER, QUIET and the server per worker class: tests/support/push_servers.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from tests.support.push_servers import (
    KEYS,
    PUSH_AFTER,
    QUIET,
    auth,
    push_env,
    push_server,
    pushes,
    subscribe,
    user,
)
from tests.support.push_service import (
    ScriptedEndpoint,
    VapidKeys,
    answer,
    push_service_fixture,  # noqa: F401
)
from tests.support.servers import ServerProcess, gunicorn, migrate, mint, post

pytestmark = [pytest.mark.server]

@pytest.fixture(scope="module", params=["eventlet", "gevent"])
def server(request, push_service, tmp_path_factory) -> Iterator[ServerProcess]:
    yield from push_server(tmp_path_factory.mktemp(f"push-{request.param}"), push_service,
                           request.param)


def send(server, user: str, **fields) -> int:
    response = post(server, {"user_id": user, "type": "comment", "title": "New comment",
                             "body": "Hello", "data": {"url": "/posts/1"}, **fields})
    assert response.status_code == 201, response.text
    return response.json()["notifications"][0]["id"]


def test_config_publishes_the_vapid_public_key(server):
    body = requests.get(server.url + "/api/push/config", timeout=5).json()
    assert body == {"enabled": True, "vapid_public_key": KEYS.public}


def test_a_user_with_no_socket_gets_the_push_and_it_decrypts_to_the_notification(
        server, push_service):
    alice = user()
    _, client_hash = subscribe(server, push_service, alice)
    started = time.monotonic()
    nid = send(server, alice, urgency="high", topic="comments")
    (message,) = push_service.wait_for_messages(client_hash, 1, timeout=10)
    took = time.monotonic() - started
    pushed = json.loads(message)
    assert pushed["id"] == nid
    assert (pushed["type"], pushed["title"], pushed["body"]) == ("comment", "New comment", "Hello")
    assert pushed["data"] == {"url": "/posts/1"}
    assert pushed["delivered_at"] is None and "truncated" not in pushed
    assert PUSH_AFTER <= took < PUSH_AFTER + 5, took
    listed = requests.get(server.url + "/api/push/subscriptions", headers=auth(alice),
                          timeout=5).json()["subscriptions"]
    assert listed[0]["origin"] == push_service.origin
    assert listed[0]["last_success_at"] is not None
    assert "endpoint" not in listed[0]


def test_a_socket_that_sends_receipts_suppresses_the_push(server, push_service, clients):
    bob = user()
    _, client_hash = subscribe(server, push_service, bob)
    socket = clients()
    socket.connect(server.url, auth={"token": mint(bob)})
    nid = send(server, bob)
    (live,) = socket.wait_for("notification")
    assert live["id"] == nid and live["delivered_at"] is None
    assert socket.client.call("delivered", {"ids": [nid]}, timeout=5) == {"updated": 1}
    time.sleep(QUIET)
    assert pushes(push_service, client_hash) == []
    assert len(socket.of("notification")) == 1  # delivered: not emitted again
    inbox = requests.get(server.url + "/api/notifications", headers=auth(bob), timeout=5).json()
    assert inbox["notifications"][0]["id"] == nid
    assert inbox["notifications"][0]["delivered_at"] is not None
    assert inbox["notifications"][0]["read_at"] is None


def test_a_connected_socket_without_receipts_is_pushed_and_emitted_again(
        server, push_service, clients):
    """The suspended iPhone: its socket still looks connected, but nothing acknowledges."""
    carol = user()
    _, client_hash = subscribe(server, push_service, carol)
    socket = clients()
    socket.connect(server.url, auth={"token": mint(carol)})
    nid = send(server, carol)
    (message,) = push_service.wait_for_messages(client_hash, 1, timeout=10)
    assert json.loads(message)["id"] == nid
    emitted = socket.wait_for("notification", 2, timeout=10)
    assert [n["id"] for n in emitted] == [nid, nid]  # the client deduplicates by id


def test_never_does_not_push(server, push_service):
    dave = user()
    _, client_hash = subscribe(server, push_service, dave)
    send(server, dave, push="never")
    time.sleep(QUIET)
    assert pushes(push_service, client_hash) == []


def test_always_pushes_at_once_even_when_the_socket_acknowledges(server, push_service,
                                                                 clients):
    erin = user()
    _, client_hash = subscribe(server, push_service, erin)
    socket = clients()
    socket.connect(server.url, auth={"token": mint(erin)})
    started = time.monotonic()
    nid = send(server, erin, push="always")
    socket.wait_for("notification")
    assert socket.client.call("delivered", {"ids": [nid]}, timeout=5) == {"updated": 1}
    (message,) = push_service.wait_for_messages(client_hash, 1, timeout=10)
    assert json.loads(message)["id"] == nid
    assert time.monotonic() - started < PUSH_AFTER + 1.5
    time.sleep(QUIET)
    assert len(push_service.messages(client_hash)) == 1  # once, not again at the check


def test_an_expired_subscription_is_removed(server, push_service):
    frank = user()
    _, client_hash = subscribe(server, push_service, frank)
    push_service.expire(client_hash)
    send(server, frank, push="always")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = requests.get(server.url + "/api/push/subscriptions", headers=auth(frank),
                              timeout=5).json()["subscriptions"]
        if not listed:
            break
        time.sleep(0.2)
    assert listed == []
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert 'notifier_push_subscriptions_removed_total{process=' in metrics
    removed = [line for line in metrics.splitlines()
               if line.startswith("notifier_pushes_total") and 'outcome="removed"' in line]
    assert removed and float(removed[0].rsplit(" ", 1)[1]) >= 1


def test_a_foreign_endpoint_is_refused_by_the_live_server(server):
    grace = user()
    with ScriptedEndpoint() as endpoint:
        response = requests.post(server.url + "/api/push/subscriptions", headers=auth(grace),
                                 json=_scripted_subscription(endpoint), timeout=10)
        # The module's server allows its own scripted endpoint's origin, not this one.
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "push_endpoint_not_allowed"


def _scripted_subscription(endpoint: ScriptedEndpoint) -> dict:
    from tests.support.push_service import b64url

    browser = VapidKeys.generate()  # any point on the curve stands for a browser's key
    return {"endpoint": endpoint.endpoint(f"/push/{uuid.uuid4().hex}"), "expirationTime": None,
            "keys": {"p256dh": browser.public, "auth": b64url(b"0123456789abcdef")}}


def test_retries_reach_the_push_service_until_it_accepts(tmp_path):
    """429 with Retry-After 2 s, then 500, then 503, then 201: four requests, the
    second at least 2 s after the first, every one with a TTL, Urgency and Topic."""
    with ScriptedEndpoint([answer(429, retry_after=2), 500, 503], then=201) as endpoint:
        env = push_env(tmp_path, endpoint.origin)
        migrate(env)
        proc = gunicorn(tmp_path, env).start()
        try:
            hana = user()
            response = requests.post(proc.url + "/api/push/subscriptions", headers=auth(hana),
                                     json=_scripted_subscription(endpoint), timeout=10)
            assert response.status_code == 201, response.text
            send(proc, hana, push="always", urgency="high", topic="t1")
            received = endpoint.wait_for(4, timeout=30)
        finally:
            proc.stop()
    assert [r.status for r in received[:4]] == [429, 500, 503, 201]
    assert received[1].at - received[0].at >= 2.0  # Retry-After honoured
    assert received[3].at - received[2].at >= 3.5  # back-off grows: 2 s, then 4 s
    for request in received[:4]:
        assert 0 < int(request.headers["ttl"]) <= 86400
        assert request.headers["urgency"] == "high" and request.headers["topic"] == "t1"
        assert request.headers["content-encoding"] == "aes128gcm"
        assert request.headers["authorization"].startswith("vapid t=")
    assert len(received) == 4


def test_a_server_restarted_between_store_and_dispatch_still_pushes(tmp_path, push_service):
    env = push_env(tmp_path, push_service.origin, PUSH_AFTER="3")
    migrate(env)
    first = gunicorn(tmp_path, env).start()
    ivan = user()
    _, client_hash = subscribe(first, push_service, ivan)
    nid = send(first, ivan)
    first.kill()  # SIGKILL to the group: no drain, nothing finishes
    first.stop()
    assert push_service.messages(client_hash) == []
    second = gunicorn(tmp_path, env).start()
    try:
        (message,) = push_service.wait_for_messages(client_hash, 1, timeout=15)
        assert json.loads(message)["id"] == nid
    finally:
        second.stop()


@pytest.mark.postgres
def test_two_nodes_on_postgresql_push_each_notification_exactly_once(
        tmp_path, postgres_url, push_service):
    env = push_env(tmp_path, push_service.origin, DATABASE_URL=postgres_url,
                   PUSH_AFTER="0.5")
    migrate(env)
    nodes = [gunicorn(tmp_path, env, name="a").start(), gunicorn(tmp_path, env, name="b").start()]
    try:
        judy = user()
        _, client_hash = subscribe(nodes[0], push_service, judy)
        ids = [send(nodes[i % 2], judy, push="always" if i % 3 == 0 else "auto")
               for i in range(30)]
        push_service.wait_for_messages(client_hash, 30, timeout=30)
        time.sleep(QUIET)
        received = Counter(json.loads(m)["id"] for m in push_service.messages(client_hash))
    finally:
        for node in nodes:
            node.stop()
    assert received == Counter(ids)  # every one, and each once


def counter(server, name: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_a_burst_of_receipts_shares_transactions(server, clients):
    """Five users with two tabs each; every tab acknowledges each of its user's ten
    notifications on its own, as soon as it arrives: 100 receipts for 50
    notifications, written in far fewer transactions, each notification marked once."""
    users = [user() for _ in range(5)]
    tabs = []
    for name in users:
        for _ in range(2):
            tab = clients()
            tab.client.on("notification", lambda n, tab=tab: tab.client.emit(
                "delivered", {"ids": [n["id"]]}, callback=lambda *_: None))
            tab.connect(server.url, auth={"token": mint(name)})
            tabs.append(tab)
    groups0 = counter(server, "notifier_receipt_write_groups_total")
    delivered0 = counter(server, "notifier_notifications_delivered_total")
    response = post(server, {"user_ids": users, "type": "burst", "title": "x", "push": "never"})
    ids = [n["id"] for n in response.json()["notifications"]]
    for _ in range(9):
        post(server, {"user_ids": users, "type": "burst", "title": "x", "push": "never"})
    deadline = time.monotonic() + 15
    while counter(server, "notifier_notifications_delivered_total") - delivered0 < 50:
        assert time.monotonic() < deadline, "not every notification was marked delivered"
        time.sleep(0.1)
    time.sleep(0.5)  # the second tab's receipts, which mark nothing, are written too
    assert counter(server, "notifier_notifications_delivered_total") - delivered0 == 50
    groups = counter(server, "notifier_receipt_write_groups_total") - groups0
    assert 1 <= groups <= 25, groups  # 100 receipts
    inbox = requests.get(server.url + "/api/notifications", headers=auth(users[0]),
                         timeout=5).json()["notifications"]
    assert ids[0] in [n["id"] for n in inbox] and all(n["delivered_at"] for n in inbox)
