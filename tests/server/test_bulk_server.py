"""POST /api/notifications/bulk on a real gunicorn server (eventlet and gevent) on
PostgreSQL, with real Socket.IO clients: a bulk of notifications reaches each user's
socket once, in order, stored in one transaction; a retry replays the answer and
delivers nothing again; and the route's bad input over real HTTP (too many items, one
bad item among good ones, a reused key with a changed body) stores nothing."""

from __future__ import annotations

import uuid

import pg8000.native
import pytest
import requests

from tests.support.servers import SERVER_API_KEY, gunicorn, migrate, mint, notify, server_env
from tests.support.services import PG_HOST, PG_PORT

pytestmark = [pytest.mark.server, pytest.mark.postgres]


@pytest.fixture(scope="module", params=["eventlet", "gevent"])
def bulk_server(request, postgres_url, tmp_path_factory):
    worker = request.param
    tmp = tmp_path_factory.mktemp(f"bulk-{worker}")
    env = server_env(tmp, DATABASE_URL=postgres_url, ASYNC_MODE=worker,
                     RATE_LIMIT_API_KEY="100000/minute")
    migrate(env)
    proc = gunicorn(tmp, env, worker=worker, name=f"bulk-{worker}").start()
    proc.database = postgres_url.rsplit("/", 1)[1]
    yield proc
    proc.stop()


def bulk(server, objects, **headers) -> requests.Response:
    return requests.post(server.url + "/api/notifications/bulk", timeout=30,
                         json={"notifications": objects},
                         headers={"Authorization": f"Bearer {SERVER_API_KEY}", **headers})


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def query(server, sql: str, **params):
    conn = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                    database=server.database)
    try:
        return conn.run(sql, **params)
    finally:
        conn.close()


def rows_of(server, *users: str) -> int:
    return query(server, "SELECT count(*) FROM notifications WHERE user_id = ANY(:u)",
                 u=list(users))[0][0]


def test_a_bulk_reaches_each_users_socket_once_in_order(bulk_server, clients):
    alice, bob = unique("bulk-alice"), unique("bulk-bob")
    sockets = {}
    for user in (alice, bob):
        sockets[user] = clients().connect(bulk_server.url, auth={"token": mint(user)},
                                          transports=["websocket"])
        sockets[user].wait_for("auth_success")
    objects = [{"user_id": (alice, bob)[i % 2], "type": "t", "title": f"n{i}",
                "data": {"i": i}} for i in range(300)]
    objects.insert(150, {"user_ids": [bob, alice], "type": "t", "title": "both"})
    key = unique("bulk-key")
    response = bulk(bulk_server, objects, **{"Idempotency-Key": key})
    assert response.status_code == 201, response.text
    results = response.json()["results"]
    assert len(results) == 301
    expected: dict[str, list[tuple[int, str]]] = {alice: [], bob: []}
    for obj, result in zip(objects, results, strict=True):
        recipients = obj.get("user_ids") or [obj["user_id"]]
        assert [n["user_id"] for n in result["notifications"]] == recipients
        for n in result["notifications"]:
            expected[n["user_id"]].append((n["id"], obj["title"]))
    for user, socket in sockets.items():
        got = socket.wait_for("notification", count=151, timeout=20)
        assert [(n["id"], n["title"]) for n in got] == expected[user]
    # Every row of the request was written by one transaction.
    assert query(bulk_server, "SELECT count(DISTINCT xmin::text), count(*) FROM notifications "
                 "WHERE user_id = ANY(:u)", u=[alice, bob]) == [[1, 302]]

    again = bulk(bulk_server, objects, **{"Idempotency-Key": key})
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == response.content  # the answer exactly, as stored
    # Nothing is emitted again: the next notification each socket gets is a new one.
    for user, socket in sockets.items():
        marker = notify(bulk_server, user, title="marker")
        got = socket.wait_for("notification", count=152, timeout=10)
        assert [(n["id"], n["title"]) for n in got[151:]] == [(marker, "marker")]
    assert rows_of(bulk_server, alice, bob) == 304


def test_bad_input_over_real_http_stores_nothing(bulk_server):
    user = unique("bulk-bad")
    good = {"user_id": user, "type": "t", "title": "fine"}

    too_many = bulk(bulk_server, [good] * 1001)
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "validation_error"
    assert "1000" in too_many.json()["error"]["message"]

    one_bad = bulk(bulk_server, [good, good, {"user_id": user, "type": "t", "title": "x",
                                              "urgency": "urgent"}, good])
    assert one_bad.status_code == 400
    error = one_bad.json()["error"]
    assert error["code"] == "validation_error"
    assert [(i["index"], i["code"]) for i in error["items"]] == [(2, "validation_error")]
    assert "urgency" in error["items"][0]["message"]

    not_a_list = requests.post(bulk_server.url + "/api/notifications/bulk", timeout=10,
                               data=b'{"notifications": {"user_id": "x"}}',
                               headers={"Authorization": f"Bearer {SERVER_API_KEY}",
                                        "Content-Type": "application/json"})
    assert not_a_list.status_code == 400
    assert rows_of(bulk_server, user) == 0

    key = unique("bulk-reused")
    first = bulk(bulk_server, [good], **{"Idempotency-Key": key})
    assert first.status_code == 201
    changed = bulk(bulk_server, [good, good], **{"Idempotency-Key": key})
    assert changed.status_code == 422
    assert changed.json() == {"error": {
        "code": "idempotency_key_reused",
        "message": "this Idempotency-Key was used with a different request body"}}
    assert rows_of(bulk_server, user) == 1
    assert requests.get(bulk_server.url + "/healthz", timeout=5).status_code == 200
