"""Threats from SECURITY.md not covered elsewhere: room snooping, identity spoofing
through events, producer-key handling, and revocation by key rotation."""

from __future__ import annotations

import pytest

from tests.support.app import API_KEY, SECRET, build_app


def received(test_client, name):
    return [m["args"][0] for m in test_client.get_received() if m["name"] == name]


@pytest.mark.parametrize("event, payload", [
    ("join", {"room": "user:bob"}),
    ("join_room", "user:bob"),
    ("subscribe", {"user_id": "bob"}),
    ("enter_room", {"room": "user:bob"}),
    ("sync", {"after_id": 0, "user_id": "bob"}),
    ("mark_read", {"all": True, "user_id": "bob"}),
])
def test_no_event_lets_a_socket_into_another_users_room(sio_client, make_token, notify,
                                                        event, payload):
    mallory = sio_client(auth={"token": make_token("mallory")})
    ack = mallory.emit(event, payload, callback=True)
    if event in ("sync", "mark_read"):
        assert "error" not in ack  # accepted, but only ever about mallory's own
        assert ack.get("notifications", []) == []
    else:
        assert ack["error"]["code"] == "unknown_event"
    mallory.get_received()
    notify("bob", title="for bob only")
    assert received(mallory, "notification") == []
    assert mallory.is_connected()


def test_socketio_internal_room_names_cannot_be_used_as_events(sio_client, make_token):
    client = sio_client(auth={"token": make_token("mallory")})
    ack = client.emit("user:bob", {}, callback=True)
    assert ack["error"]["code"] == "unknown_event"


def test_producer_key_only_in_the_authorization_header(client):
    body = {"user_id": "a", "type": "t", "title": "x"}
    for query in (f"api_key={API_KEY}", f"key={API_KEY}", f"token={API_KEY}"):
        response = client.post(f"/api/notifications?{query}", json=body)
        assert response.status_code == 401
    assert client.post("/api/notifications", json=body, headers={
        "X-API-Key": API_KEY}).status_code == 401


def test_producer_key_is_not_a_user_token(client):
    response = client.get("/api/notifications", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 401


def test_a_near_miss_api_key_is_401_invalid_token(client):
    almost = API_KEY[:-1] + ("x" if API_KEY[-1] != "x" else "y")
    response = client.post("/api/notifications", json={}, headers={
        "Authorization": f"Bearer {almost}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_removing_a_key_revokes_every_token_it_signed(tmp_path):
    """Revocation: tokens are short-lived, and dropping a key from JWT_SECRET_KEY ends
    all of its tokens at once (a new process verifies with what is left)."""
    from utils.auth.tokens import create_access_token
    from utils.extensions import socketio

    old = build_app(tmp_path, JWT_SECRET_KEY=SECRET)
    with old.app_context():
        token = create_access_token("alice", 3600)
    (tmp_path / "rotated").mkdir()
    rotated = build_app(tmp_path / "rotated", JWT_SECRET_KEY="replacement-" + "r" * 40)
    refused = socketio.test_client(rotated, auth={"token": token},
                                   headers={"Origin": "http://localhost:3000"})
    assert not refused.is_connected()
    assert rotated.test_client().get("/api/notifications/unread-count", headers={
        "Authorization": f"Bearer {token}"}).status_code == 401


def test_producers_cannot_set_server_owned_fields(client, make_token):
    """Mass assignment: id, created_at, read_at and the like are the server's."""
    body = {"user_id": "alice", "type": "t", "title": "x", "id": 999999,
            "created_at": "1999-01-01T00:00:00Z", "read_at": "1999-01-01T00:00:00Z",
            "user_ids_extra": ["bob"]}
    response = client.post("/api/notifications", json=body, headers={
        "Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 201
    created = response.get_json()["notifications"]
    assert [n["user_id"] for n in created] == ["alice"] and created[0]["id"] != 999999
    inbox = client.get("/api/notifications", headers={
        "Authorization": f"Bearer {make_token('alice')}"}).get_json()["notifications"]
    assert inbox[0]["read_at"] is None and not inbox[0]["created_at"].startswith("1999")
    bob = client.get("/api/notifications", headers={
        "Authorization": f"Bearer {make_token('bob')}"}).get_json()["notifications"]
    assert bob == []
