"""GET /api/presence and push "if_offline" on one process (presence in memory, from the
socket registry); and the answers when presence across nodes is unavailable (a real
RedisPresence pointed at a port where nothing listens)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support.app import API_KEY, build_app
from tests.support.servers import free_port
from utils.extensions import db
from utils.realtime.presence import MAX_USERS, RedisPresence
from utils.services import services

PRODUCER = {"Authorization": f"Bearer {API_KEY}"}


def presence(client, *user_ids: str, headers=PRODUCER):
    query = "&".join(f"user_id={u}" for u in user_ids)
    return client.get(f"/api/presence?{query}", headers=headers)


def connect(sio_client, make_token, user: str):
    socket = sio_client(auth={"token": make_token(user)})
    assert socket.is_connected()
    return socket


def parse(stamp: str) -> datetime:
    assert stamp.endswith("Z")
    return datetime.fromisoformat(stamp)


def test_online_users_count_their_sockets_in_request_order(client, sio_client, make_token):
    connect(sio_client, make_token, "alice")
    connect(sio_client, make_token, "alice")
    connect(sio_client, make_token, "bob")
    before = datetime.now(UTC)
    response = presence(client, "carol", "alice", "bob", "alice")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    users = response.get_json()["users"]
    assert [(u["user_id"], u["online"], u["sockets"]) for u in users] == [
        ("carol", False, 0), ("alice", True, 2), ("bob", True, 1)]  # duplicates dropped
    assert users[0]["last_seen_at"] is None  # never seen
    for online in users[1:]:  # online: seen at the answer
        assert before - timedelta(seconds=1) <= parse(online["last_seen_at"]) \
            <= datetime.now(UTC)


def test_an_offline_user_was_last_seen_when_the_last_socket_went(client, sio_client,
                                                                 make_token):
    first, second = (connect(sio_client, make_token, "dave") for _ in range(2))
    first.disconnect()
    (dave,) = presence(client, "dave").get_json()["users"]
    assert (dave["online"], dave["sockets"]) == (True, 1)
    second.disconnect()
    gone = datetime.now(UTC)
    (dave,) = presence(client, "dave").get_json()["users"]
    assert (dave["online"], dave["sockets"]) == (False, 0)
    assert gone - timedelta(seconds=1) <= parse(dave["last_seen_at"]) <= gone


@pytest.mark.parametrize("headers, code", [
    ({}, "api_key_missing"),
    ({"Authorization": "Bearer wrong-key"}, "api_key_invalid"),
])
def test_the_producer_key_is_required(client, headers, code):
    response = presence(client, "alice", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == code


def test_a_user_token_is_not_a_producer_key(client, make_token):
    response = presence(client, "alice", headers={"Authorization":
                                                  f"Bearer {make_token('alice')}"})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "api_key_invalid"


@pytest.mark.parametrize("query, message", [
    ("", "user_id is required"),
    ("user=alice", "user_id is required"),
    ("user_id=", "each user id must be 1 to 128 characters"),
    ("user_id=" + "x" * 129, "each user id must be 1 to 128 characters"),
    ("user_id=a%00b", "NUL"),
    ("&".join(f"user_id=u{i}" for i in range(MAX_USERS + 1)), "at most 100 user ids"),
])
def test_bad_input_is_400_in_the_error_shape(client, query, message):
    response = client.get(f"/api/presence?{query}", headers=PRODUCER)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert message in error["message"]


def test_a_hundred_users_are_answered(client):
    users = [f"u{i}" for i in range(MAX_USERS)]
    answer = presence(client, *users).get_json()["users"]
    assert [u["user_id"] for u in answer] == users


def test_post_answers_the_same_for_ids_too_long_for_a_url(client, sio_client, make_token):
    long_id = "x" * 128
    connect(sio_client, make_token, long_id)
    users = [long_id] + [f"{i:0128d}" for i in range(MAX_USERS - 1)]
    response = client.post("/api/presence", json={"user_ids": users}, headers=PRODUCER)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    answer = response.get_json()["users"]
    assert [u["user_id"] for u in answer] == users
    assert [u["sockets"] for u in answer] == [1] + [0] * (MAX_USERS - 1)
    as_numbers = client.post("/api/presence", json={"user_ids": [7, "7", 8]}, headers=PRODUCER)
    assert [u["user_id"] for u in as_numbers.get_json()["users"]] == ["7", "8"]


@pytest.mark.parametrize("body, message", [
    ({}, 'send {"user_ids": [...]}'),
    ({"user_ids": []}, 'send {"user_ids": [...]}'),
    ({"user_ids": "alice"}, 'send {"user_ids": [...]}'),
    ([1], 'send {"user_ids": [...]}'),
    ({"user_ids": [True]}, "strings or integers"),
    ({"user_ids": [None]}, "strings or integers"),
    ({"user_ids": [""]}, "1 to 128 characters"),
    ({"user_ids": ["a\u0000"]}, "NUL"),
    ({"user_ids": [f"u{i}" for i in range(MAX_USERS + 1)]}, "at most 100 user ids"),
])
def test_bad_post_bodies_are_400_in_the_error_shape(client, body, message):
    response = client.post("/api/presence", json=body, headers=PRODUCER)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert message in error["message"]


def test_a_lone_surrogate_is_400_not_a_failure(client):
    response = client.post("/api/presence", data='{"user_ids": ["\\ud800"]}',
                           content_type="application/json", headers=PRODUCER)
    assert response.status_code == 400
    assert "lone surrogates" in response.get_json()["error"]["message"]


def test_post_needs_the_producer_key_and_json(client):
    assert client.post("/api/presence", json={"user_ids": ["a"]}).status_code == 401
    response = client.post("/api/presence", data="user_ids=a", headers=PRODUCER)
    assert response.status_code == 415


# ------------------------------------------------------------------ push "if_offline"


def stored(app) -> dict[str, tuple[str, bool]]:
    """user -> (the push mode stored, whether a push is due at once)."""
    with app.app_context():
        rows = db.session.execute(sa.text(
            "SELECT user_id, push, push_at IS NOT NULL FROM notifications")).all()
        db.session.rollback()
    return {user: (push, bool(due)) for user, push, due in rows}


def test_if_offline_pushes_at_once_for_offline_users_only(app, client, sio_client,
                                                          make_token):
    connect(sio_client, make_token, "alice")
    response = client.post("/api/notifications", headers=PRODUCER, json={
        "user_ids": ["alice", "bob"], "type": "t", "title": "x", "push": "if_offline"})
    assert response.status_code == 201
    assert stored(app) == {"alice": ("never", False), "bob": ("always", True)}


def test_if_offline_in_a_bulk_request_is_resolved_per_user(app, client, sio_client,
                                                           make_token):
    connect(sio_client, make_token, "carol")
    response = client.post("/api/notifications/bulk", headers=PRODUCER, json={
        "notifications": [
            {"user_ids": ["carol", "dave"], "type": "t", "title": "x", "push": "if_offline"},
            {"user_id": "erin", "type": "t", "title": "y"}]})
    assert response.status_code == 201, response.get_json()
    assert stored(app) == {"carol": ("never", False), "dave": ("always", True),
                           "erin": ("auto", False)}


def test_an_unknown_push_mode_names_if_offline(client):
    response = client.post("/api/notifications", headers=PRODUCER, json={
        "user_id": "a", "type": "t", "title": "x", "push": "sometimes"})
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == \
        "push must be auto, always, never or if_offline"


# ------------------------------------------------------------------ Redis unavailable


@pytest.fixture
def unreachable(tmp_path):
    """An app whose presence is a RedisPresence on a port where nothing listens (the
    app itself runs without Redis)."""
    app = build_app(tmp_path)
    parts = services(app)
    parts.presence = RedisPresence(parts.realtime.registry,
                                   f"redis://127.0.0.1:{free_port()}/0", 25,
                                   lambda *_: None, lambda _: None)
    return app


def test_presence_unavailable_is_503_in_the_error_shape(unreachable):
    response = presence(unreachable.test_client(), "alice")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert response.get_json()["error"]["code"] == "presence_unavailable"


def test_if_offline_falls_back_to_auto_when_presence_is_unknown(unreachable):
    response = unreachable.test_client().post("/api/notifications", headers=PRODUCER, json={
        "user_id": "frank", "type": "t", "title": "x", "push": "if_offline"})
    assert response.status_code == 201
    assert stored(unreachable) == {"frank": ("auto", False)}
