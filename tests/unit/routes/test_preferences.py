"""A user's preferences: GET, PUT and PATCH (RFC 7396) on /api/preferences, their
checks in the error shape, and what they do to a producer's send (evaluated at send
time: stored or not, emitted or not, pushed or not, and "muted" in the answer)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

PREFS = "/api/preferences"
MERGE = "application/merge-patch+json"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def alice(make_token):
    return bearer(make_token("alice"))


def send(client, api_headers, user="alice", type="comment", bulk=False, **fields):
    body = {"user_id": user, "type": type, "title": "hi", **fields}
    if bulk:
        response = client.post("/api/notifications/bulk", json={"notifications": [body]},
                               headers=api_headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["results"][0]["notifications"][0]
    response = client.post("/api/notifications", json=body, headers=api_headers)
    assert response.status_code == 201, response.get_json()
    (item,) = response.get_json()["notifications"]
    return item


def row(app, notification_id):
    from utils.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT push, read_at, delivered_at, check_at, critical FROM notifications "
            "WHERE id = :id"), {"id": notification_id}).one_or_none()


def stored(app) -> int:
    from utils.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar_one()


def emitted(socket):
    return [m["args"][0] for m in socket.get_received() if m["name"] == "notification"]


# -- the routes


def test_a_user_without_preferences_reads_the_defaults(client, alice):
    response = client.get(PREFS, headers=alice)
    assert response.status_code == 200
    assert response.get_json() == {"channels": {"in_app": True, "push": True}, "types": {},
                                   "timezone": None, "quiet_hours": [], "updated_at": None}


def test_put_replaces_the_whole_set_and_get_reads_it_back(client, alice, make_token):
    body = {"channels": {"push": False}, "types": {"comment": {"push": False}},
            "timezone": "Asia/Seoul", "quiet_hours": [{"start": "22:00", "end": "07:00"}]}
    put = client.put(PREFS, json=body, headers=alice)
    assert put.status_code == 200, put.get_json()
    got = client.get(PREFS, headers=alice).get_json()
    assert got == put.get_json()
    assert got["channels"] == {"in_app": True, "push": False}
    assert got["types"] == {"comment": {"push": False}}
    assert got["timezone"] == "Asia/Seoul" and got["updated_at"].endswith("Z")
    # A second PUT replaces: what it leaves out goes back to its default.
    client.put(PREFS, json={"timezone": "Europe/Paris"}, headers=alice)
    again = client.get(PREFS, headers=alice).get_json()
    assert again["channels"] == {"in_app": True, "push": True}
    assert again["types"] == {} and again["quiet_hours"] == []
    assert again["timezone"] == "Europe/Paris"
    # Another user's set is their own.
    bob = client.get(PREFS, headers=bearer(make_token("bob"))).get_json()
    assert bob["timezone"] is None


def test_the_answer_of_get_can_be_put_back_unchanged(client, alice):
    client.put(PREFS, json={"types": {"like": {"in_app": False}}}, headers=alice)
    got = client.get(PREFS, headers=alice).get_json()
    again = client.put(PREFS, json=got, headers=alice)
    assert again.status_code == 200
    assert {k: v for k, v in again.get_json().items() if k != "updated_at"} == \
        {k: v for k, v in got.items() if k != "updated_at"}


def test_patch_merges_and_null_removes(client, alice):
    client.put(PREFS, json={"types": {"comment": {"push": False}, "like": {"push": False}},
                            "timezone": "Asia/Seoul"}, headers=alice)
    patch = {"types": {"like": None, "mention": {"in_app": False}}, "timezone": None,
             "channels": {"push": False}}
    response = client.patch(PREFS, json=patch, headers={**alice, "Content-Type": MERGE})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["types"] == {"comment": {"push": False}, "mention": {"in_app": False}}
    assert body["timezone"] is None
    assert body["channels"] == {"in_app": True, "push": False}
    assert client.get(PREFS, headers=alice).get_json()["types"] == body["types"]


def test_patch_takes_only_a_json_merge_patch(client, alice):
    response = client.patch(PREFS, data="channels=off",
                            headers={**alice, "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    response = client.patch(PREFS, json=[1], headers={**alice, "Content-Type": MERGE})
    assert response.status_code == 400


@pytest.mark.parametrize(("body", "fragment"), [
    ({"email": True}, "unknown key 'email'"),
    ({"channels": {"sms": False}}, "unknown channel 'sms'"),
    ({"channels": {"push": "no"}}, "channels.push must be true or false"),
    ({"channels": []}, "channels must be an object"),
    ({"types": {"comment": True}}, "types.comment must be an object"),
    ({"types": {"comment": {"email": False}}}, "unknown channel 'email' in types.comment"),
    ({"types": {"comment": {"push": 0}}}, "types.comment.push must be true or false"),
    ({"types": {"x" * 65: {"push": False}}}, "a type must be 1 to 64 characters"),
    ({"types": {f"t{i}": {"push": False} for i in range(101)}}, "at most 100 types"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"timezone": "../../etc/passwd"}, "unknown time zone"),
    ({"timezone": 9}, "IANA time zone name"),
    ({"quiet_hours": [{"start": "22:00", "end": "22:00"}]}, "quiet_hours[0] is empty"),
    ({"quiet_hours": [{"start": "22:00", "end": "07:00"}, {"start": "06:00", "end": "08:00"}]},
     "quiet_hours overlap: 22:00-07:00 and 06:00-08:00"),
    ({"quiet_hours": [{"start": "24:00", "end": "07:00"}]}, 'quiet_hours[0].start must be'),
    ({"quiet_hours": [{"start": "7:00", "end": "08:00"}]}, 'quiet_hours[0].start must be'),
    ({"quiet_hours": [{"start": "22:00"}]}, "quiet_hours[0] must be"),
    ({"quiet_hours": [{"start": "22:00", "end": "07:00", "days": [1]}]}, "quiet_hours[0]"),
    ({"quiet_hours": {"start": "22:00", "end": "07:00"}}, "quiet_hours must be a list"),
    ({"quiet_hours": [{"start": f"{h:02}:00", "end": f"{h:02}:30"} for h in range(11)]},
     "at most 10 windows"),
])
def test_bad_preferences_are_400_in_the_error_shape_and_change_nothing(client, alice, body,
                                                                       fragment):
    client.put(PREFS, json={"timezone": "Asia/Seoul"}, headers=alice)
    for response in (client.put(PREFS, json=body, headers=alice),
                     client.patch(PREFS, json=body, headers={**alice, "Content-Type": MERGE})):
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "validation_error"
        assert fragment in error["message"]
    assert client.get(PREFS, headers=alice).get_json()["timezone"] == "Asia/Seoul"


@pytest.mark.parametrize("method", ["get", "put", "patch"])
def test_preferences_need_a_user_token_not_the_producer_key(client, api_headers, method):
    for headers in ({}, api_headers):
        response = getattr(client, method)(PREFS, json={}, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"]


# -- at send time


def test_muted_for_push_it_is_stored_and_emitted_but_never_pushed(app, client, api_headers,
                                                                 alice, sio_client,
                                                                 make_token):
    client.put(PREFS, json={"types": {"comment": {"push": False}}}, headers=alice)
    socket = sio_client(auth={"token": make_token("alice")})
    socket.get_received()
    for bulk in (False, True):
        item = send(client, api_headers, push="always", bulk=bulk)
        assert item["muted"] == ["push"] and item["id"] is not None
        assert row(app, item["id"]).push == "never"
        assert [n["id"] for n in emitted(socket)] == [item["id"]]
    other = send(client, api_headers, type="like")
    assert "muted" not in other and row(app, other["id"]).push == "auto"


def test_muted_on_every_channel_nothing_is_stored_nor_emitted(app, client, api_headers, alice,
                                                             sio_client, make_token):
    client.put(PREFS, json={"channels": {"push": False}, "types": {"comment": {"in_app": False}}},
               headers=alice)
    socket = sio_client(auth={"token": make_token("alice")})
    socket.get_received()
    before = stored(app)
    for bulk in (False, True):
        item = send(client, api_headers, bulk=bulk)
        assert item == {"id": None, "user_id": "alice", "muted": ["in_app", "push"]}
    assert stored(app) == before
    assert emitted(socket) == []


def test_muted_in_app_alone_it_is_kept_read_never_emitted_and_pushed_at_once(
        app, client, api_headers, alice, sio_client, make_token):
    client.put(PREFS, json={"channels": {"in_app": False}}, headers=alice)
    socket = sio_client(auth={"token": make_token("alice")})
    socket.get_received()
    item = send(client, api_headers)
    assert item["muted"] == ["in_app"]
    saved = row(app, item["id"])
    assert saved.push == "always" and saved.read_at is not None and saved.check_at is None
    assert emitted(socket) == []
    inbox = client.get("/api/notifications", headers=alice).get_json()
    assert inbox["unread_count"] == 0 and [n["id"] for n in inbox["notifications"]] == [item["id"]]
    # With push "never" as well, no channel is left: nothing is stored.
    assert send(client, api_headers, push="never")["id"] is None


def test_a_critical_notification_goes_through_every_preference(app, client, api_headers, alice,
                                                              sio_client, make_token):
    client.put(PREFS, json={"channels": {"in_app": False, "push": False}}, headers=alice)
    socket = sio_client(auth={"token": make_token("alice")})
    socket.get_received()
    item = send(client, api_headers, critical=True, push="always")
    assert "muted" not in item and item["id"]
    saved = row(app, item["id"])
    assert saved.critical and saved.push == "always" and saved.read_at is None
    assert [n["id"] for n in emitted(socket)] == [item["id"]]


def test_preferences_apply_per_recipient_in_one_request(app, client, api_headers, make_token):
    client.put(PREFS, json={"channels": {"push": False}}, headers=bearer(make_token("bob")))
    response = client.post("/api/notifications", headers=api_headers, json={
        "user_ids": ["alice", "bob"], "type": "comment", "title": "hi"})
    alice_item, bob_item = response.get_json()["notifications"]
    assert "muted" not in alice_item and bob_item["muted"] == ["push"]
    assert row(app, alice_item["id"]).push == "auto"
    assert row(app, bob_item["id"]).push == "never"


def test_a_user_token_cannot_send_a_critical_notification(client, alice):
    response = client.post("/api/notifications", headers=alice, json={
        "user_id": "alice", "type": "comment", "title": "hi", "critical": True})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "api_key_invalid"


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"critical": "yes"}, "critical must be true or false"),
    ({"collapse_key": "k" * 65}, "collapse_key must be 1 to 64 characters"),
    ({"collapse_key": "a b"}, "collapse_key must be"),
    ({"collapse_key": ""}, "collapse_key must be"),
    ({"collapse_template": "and {count} more"}, "collapse_template needs a collapse_key"),
    ({"collapse_key": "k", "collapse_template": "and more"}, 'must contain "{count}"'),
    ({"collapse_key": "k", "collapse_template": "{count}" + "x" * 100}, "at most 100"),
])
def test_bad_control_fields_are_400(client, api_headers, fields, fragment):
    response = client.post("/api/notifications", headers=api_headers, json={
        "user_id": "alice", "type": "comment", "title": "hi", **fields})
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]["message"]


def test_collapse_fields_are_stored_with_the_notification(app, client, api_headers):
    from utils.extensions import db

    item = send(client, api_headers, collapse_key="post:42", collapse_template="+{count} more")
    with app.app_context(), db.engine.connect() as conn:
        saved = conn.execute(sa.text("SELECT collapse_key, collapse_template FROM notifications"
                                     " WHERE id = :id"), {"id": item["id"]}).one()
    assert tuple(saved) == ("post:42", "+{count} more")


@pytest.mark.parametrize(("path", "method"), [(PREFS, "PUT"), (PREFS, "PATCH"),
                                              ("/api/push/subscriptions/1", "PATCH")])
def test_a_front_end_on_an_allowed_origin_may_put_and_patch(client, path, method):
    """A browser on the front end's origin sends a preflight first: without PUT and
    PATCH in its answer, usePreferences().update() fails cross-origin."""
    from tests.support.app import ORIGIN

    response = client.options(path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    assert method in [m.strip() for m in
                      response.headers["Access-Control-Allow-Methods"].split(",")]
