"""Presence across nodes, for real: two gunicorn nodes (eventlet, then gevent) sharing
Redis and PostgreSQL, real python-socketio clients, and the real local push service
(web-push-testing) for ``push: "if_offline"``.

PING_INTERVAL is 2 s here, so each node's heartbeat comes every 2 s and its hash lives
4 s (2 x PING_INTERVAL): a node killed with SIGKILL must stop counting within that
bound. PUSH_AFTER is 1 s: a notification resolved to "auto" by mistake would be pushed
to a socket that sends no receipts (the Recorder sends none) within about 2 s, so a
push that must not come is awaited QUIET seconds.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.cluster import API_KEY, Cluster, Recorder, wait_for
from tests.support.push_service import (
    VapidKeys,
    browser_json,
    push_service_fixture,  # noqa: F401
)
from tests.support.servers import mint
from tests.support.services import REDIS_HOST, REDIS_PORT, SHARED_REDIS, require_service

pytestmark = [pytest.mark.server]

PING_INTERVAL = 2
BOUND = 2 * PING_INTERVAL  # after a SIGKILL, the node's counts expire within this
SLACK = 1.5  # polling, and a loaded machine
PUSH_AFTER = 1.0
QUIET = 4.0
KEYS = VapidKeys.generate()
PRODUCER = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def cluster(tmp_path, worker, postgres_url, push_service):
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    nodes = Cluster(tmp_path, SHARED_REDIS, postgres_url, n=2, ASYNC_MODE=worker,
                    PING_INTERVAL=str(PING_INTERVAL), PUSH_AFTER=str(PUSH_AFTER),
                    VAPID_PRIVATE_KEY=KEYS.private, VAPID_SUBJECT="mailto:push@example.com",
                    WEB_PUSH_ENDPOINT_ORIGINS=push_service.origin).start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def sockets():
    made: list[Recorder] = []

    def _connect(node, user: str) -> Recorder:
        recorder = Recorder(user, reconnection=False)
        made.append(recorder)
        return recorder.connect(node.url)

    yield _connect
    for recorder in made:
        recorder.close()


def user() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


def presence(node, *users: str) -> dict[str, dict]:
    response = requests.get(node.url + "/api/presence", params={"user_id": list(users)},
                            headers=PRODUCER, timeout=5)
    assert response.status_code == 200, response.text
    answer = response.json()["users"]
    assert [u["user_id"] for u in answer] == list(users)  # in request order
    return {u["user_id"]: u for u in answer}


def sockets_of(node, who: str) -> int:
    return presence(node, who)[who]["sockets"]


def seen_at(entry: dict) -> float:
    return datetime.fromisoformat(entry["last_seen_at"]).astimezone(UTC).timestamp()


def test_sockets_on_both_nodes_count_two_and_a_killed_node_stops_counting(
        cluster, sockets):
    node1, node2 = cluster.nodes
    alice, bob, carol = user(), user(), user()
    sockets(node1, alice)
    sockets(node2, alice)
    sockets(node2, bob)  # only on the node that will die
    for node in (node1, node2):  # each connect is published within about 0.25 s
        assert wait_for(lambda n=node: sockets_of(n, alice) == 2, 5), presence(node, alice)
    assert wait_for(lambda: sockets_of(node1, bob) == 1, 5), presence(node1, bob)
    answer = presence(node1, carol, bob, alice)
    assert [(u["online"], u["sockets"]) for u in answer.values()] == [
        (False, 0), (True, 1), (True, 2)]
    assert answer[carol]["last_seen_at"] is None  # never seen
    assert abs(seen_at(answer[alice]) - time.time()) < 2  # online: seen now

    time.sleep(BOUND + 1)  # past the TTL: only node2's heartbeats keep it counted
    assert sockets_of(node1, alice) == 2

    node2.kill(signal.SIGKILL)
    killed = time.monotonic()
    killed_at = time.time()
    assert wait_for(lambda: sockets_of(node1, alice) == 1, BOUND + SLACK, interval=0.1), \
        presence(node1, alice)
    took = time.monotonic() - killed
    assert took <= BOUND + SLACK, took
    gone = presence(node1, bob, alice)
    assert (gone[bob]["online"], gone[bob]["sockets"]) == (False, 0)
    # bob was last seen at node2's last heartbeat (or flush): within one interval of the kill
    assert killed_at - PING_INTERVAL - 1 <= seen_at(gone[bob]) <= killed_at + 0.5
    assert (gone[alice]["online"], gone[alice]["sockets"]) == (True, 1)


def subscribe(node, push_service, who: str) -> str:
    sub = push_service.subscribe(KEYS.public)
    response = requests.post(node.url + "/api/push/subscriptions", json=browser_json(sub),
                             headers={"Authorization": f"Bearer {mint(who)}"}, timeout=10)
    assert response.status_code == 201, response.text
    return sub["clientHash"]


def send_if_offline(node, *users: str) -> dict[str, int]:
    response = requests.post(node.url + "/api/notifications", headers=PRODUCER, timeout=10,
                             json={"user_ids": list(users), "type": "comment",
                                   "title": "New comment", "push": "if_offline"})
    assert response.status_code == 201, response.text
    return {n["user_id"]: n["id"] for n in response.json()["notifications"]}


def stored_push(postgres_url: str, nid: int) -> str:
    import pg8000.native

    url = urlsplit(postgres_url)
    conn = pg8000.native.Connection(url.username, host=url.hostname, port=url.port,
                                    database=url.path.lstrip("/"))
    try:
        return conn.run("SELECT push FROM notifications WHERE id = :id", id=nid)[0][0]
    finally:
        conn.close()


def test_if_offline_pushes_to_a_user_offline_everywhere_never_to_one_online_elsewhere(
        cluster, sockets, push_service, postgres_url):
    node1, node2 = cluster.nodes
    online, offline = user(), user()
    online_hash = subscribe(node1, push_service, online)
    offline_hash = subscribe(node1, push_service, offline)
    recorder = sockets(node2, online)  # a socket on the other node only
    assert wait_for(lambda: presence(node1, online)[online]["online"], 5)

    started = time.monotonic()
    ids = send_if_offline(node1, online, offline)
    (message,) = push_service.wait_for_messages(offline_hash, 1, timeout=10)
    assert json.loads(message)["id"] == ids[offline]
    assert time.monotonic() - started < PUSH_AFTER + 1.5  # at once, not at the check
    assert stored_push(postgres_url, ids[offline]) == "always"
    assert stored_push(postgres_url, ids[online]) == "never"
    assert wait_for(lambda: ids[online] in recorder.ids, 5)  # the socket still gets it
    time.sleep(QUIET)
    assert push_service.messages(online_hash) == []  # no receipt came, and still no push
    assert len(push_service.messages(offline_hash)) == 1  # once

    # The socket goes: the same user is offline now, so the next one is pushed.
    recorder.close()
    assert wait_for(lambda: not presence(node1, online)[online]["online"], 5)
    again = send_if_offline(node1, online)
    (message,) = push_service.wait_for_messages(online_hash, 1, timeout=10)
    assert json.loads(message)["id"] == again[online]
