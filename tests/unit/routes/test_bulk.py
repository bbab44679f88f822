"""POST /api/notifications/bulk: many notification objects in one request, answered one
result per object in request order, validated all or nothing, one Idempotency-Key for
the whole request, stored through the group commit and emitted after it commits."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

BULK = "/api/notifications/bulk"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def one(user, title="hi", **fields):
    return {"user_id": user, "type": "test", "title": title, **fields}


def stored_count(app) -> int:
    from utils.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar_one()


def received(socket, name="notification"):
    return [m["args"][0] for m in socket.get_received() if m["name"] == name]


def items_error(response):
    """The error of a 400 that names bad items: the error shape plus ``items``."""
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "items"}
    assert body["error"]["code"] == "validation_error"
    for item in body["error"]["items"]:
        assert set(item) == {"index", "code", "message"}
        assert item["code"] == "validation_error" and item["message"]
    return body["error"]


def plain_error(response):
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]


# --- the answer --------------------------------------------------------------------

def test_one_result_per_object_in_request_order(client, api_headers, make_token):
    objects = [one("carol", "c1"), {"user_ids": ["alice", "bob", "alice"], "type": "t",
                                    "title": "ab"},
               one(7, "seven", body="b", data={"k": [1]}), one("carol", "c2")]
    response = client.post(BULK, headers=api_headers, json={"notifications": objects})
    assert response.status_code == 201, response.get_json()
    assert "Idempotent-Replayed" not in response.headers
    results = response.get_json()["results"]
    assert [[n["user_id"] for n in r["notifications"]] for r in results] == [
        ["carol"], ["alice", "bob"], ["7"], ["carol"]]
    ids = [n["id"] for r in results for n in r["notifications"]]
    assert ids == sorted(ids) and len(set(ids)) == 5  # stored in request order
    # Each result is exactly what POST /api/notifications answers: same keys, nothing else.
    assert all(set(r) == {"notifications"} for r in results)
    assert all(set(n) == {"id", "user_id"} for r in results for n in r["notifications"])
    inbox = client.get("/api/notifications", headers=bearer(make_token("carol"))).get_json()
    assert [(n["id"], n["title"]) for n in inbox["notifications"]] == [
        (results[3]["notifications"][0]["id"], "c2"), (results[0]["notifications"][0]["id"], "c1")]
    seven = client.get("/api/notifications", headers=bearer(make_token("7"))).get_json()
    [row] = seven["notifications"]
    assert (row["title"], row["body"], row["data"]) == ("seven", "b", {"k": [1]})


def test_each_result_matches_what_the_single_route_answers(client, api_headers):
    objects = [one("a"), {"user_ids": ["b", "c"], "type": "t", "title": "x"}]
    bulk = client.post(BULK, headers=api_headers, json={"notifications": objects}).get_json()
    singles = [client.post("/api/notifications", headers=api_headers, json=o).get_json()
               for o in objects]
    assert [[n["user_id"] for n in r["notifications"]] for r in bulk["results"]] == \
        [[n["user_id"] for n in r["notifications"]] for r in singles]
    assert [set(r) for r in bulk["results"]] == [set(r) for r in singles]


def test_push_options_are_kept_per_object(app, client, api_headers):
    from utils.extensions import db

    objects = [one("a", push="always", urgency="high", topic="t-1"), one("b", push="never"),
               one("c")]
    client.post(BULK, headers=api_headers, json={"notifications": objects})
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT user_id, push, push_urgency, push_topic, push_at IS NOT NULL "
            "FROM notifications ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("a", "always", "high", "t-1", 1),
                                        ("b", "never", None, None, 0),
                                        ("c", "auto", None, None, 0)]


def test_a_thousand_objects_are_accepted(app, client, api_headers):
    objects = [one(f"u{i}", f"n{i}") for i in range(1000)]
    response = client.post(BULK, headers=api_headers, json={"notifications": objects})
    assert response.status_code == 201
    results = response.get_json()["results"]
    assert [r["notifications"][0]["user_id"] for r in results] == [f"u{i}" for i in range(1000)]
    assert stored_count(app) == 1000


# --- all or nothing ----------------------------------------------------------------

def test_one_bad_object_among_good_ones_stores_none_and_is_named(app, client, api_headers):
    objects = [one("a"), one("b"), {"user_id": "c", "type": "t"}, one("d")]
    response = client.post(BULK, headers=api_headers, json={"notifications": objects})
    assert response.status_code == 400
    error = items_error(response)
    assert [(i["index"], i["message"]) for i in error["items"]] == [(2, "title is required")]
    assert "notifications[2]" in error["message"]
    assert stored_count(app) == 0


def test_every_bad_object_is_named_by_its_index(app, client, api_headers):
    objects = [one("a"), "text", one("b", title=" "), one("c"), {"type": "t", "title": "x"},
               one("d", data={"x": "\ud800"}), None, one("e", push="sometimes")]
    response = client.post(BULK, headers=api_headers, json={"notifications": objects})
    assert response.status_code == 400
    items = items_error(response)["items"]
    assert [i["index"] for i in items] == [1, 2, 4, 5, 6, 7]
    messages = dict((i["index"], i["message"]) for i in items)
    assert "JSON object" in messages[1] and "JSON object" in messages[6]
    assert "title" in messages[2] and "user_id" in messages[4]
    assert "Unicode" in messages[5] and "push" in messages[7]
    assert "6 of 8" in items_error(response)["message"]
    assert stored_count(app) == 0


@pytest.mark.parametrize("body, fragment", [
    ({"notifications": []}, "at least one"),
    ({"notifications": [one(f"u{i}") for i in range(1001)]}, "at most 1000"),
    ({"notifications": one("a")}, '{"notifications"'),
    ({"notifications": None}, '{"notifications"'),
    ({}, '{"notifications"'),
    ([one("a")], '{"notifications"'),
    ("text", '{"notifications"'),
    ({"notifications": [{"user_ids": [f"u{i}" for i in range(1000)], "type": "t",
                         "title": "x"}] * 11}, "at most 10000"),
])
def test_a_bad_list_is_400_and_stores_nothing(app, client, api_headers, body, fragment):
    response = client.post(BULK, headers=api_headers, json=body)
    assert response.status_code == 400
    error = plain_error(response)
    assert error["code"] == "validation_error"
    assert fragment in error["message"]
    assert stored_count(app) == 0


def test_ten_thousand_recipients_are_accepted(app, client, api_headers):
    objects = [{"user_ids": [f"u{i}" for i in range(1000)], "type": "t", "title": "x"}] * 10
    response = client.post(BULK, headers=api_headers, json={"notifications": objects})
    assert response.status_code == 201
    assert [len(r["notifications"]) for r in response.get_json()["results"]] == [1000] * 10
    assert stored_count(app) == 10_000


def test_the_body_may_be_up_to_one_mebibyte(app, client, api_headers):
    # 400 objects of about 2 KiB: more than the 256 KiB of every other route.
    objects = [one(f"u{i}", body="b" * 1900) for i in range(400)]
    response = client.post(BULK, headers=api_headers, json={"notifications": objects})
    assert response.status_code == 201
    too_big = [one(f"u{i}", body="b" * 1990, data={"k": "v" * 2000}) for i in range(300)]
    response = client.post(BULK, headers=api_headers, json={"notifications": too_big})
    assert response.status_code == 413
    assert plain_error(response)["code"] == "payload_too_large"
    assert stored_count(app) == 400
    # The single route keeps its 256 KiB.
    response = client.post("/api/notifications", headers=api_headers,
                           json=one("a", data={"k": "v" * 300_000}))
    assert response.status_code == 413


def test_the_producer_key_is_required(app, client):
    body = {"notifications": [one("a")]}
    assert client.post(BULK, json=body).status_code == 401
    response = client.post(BULK, json=body, headers=bearer("wrong-key"))
    assert (response.status_code, plain_error(response)["code"]) == (401, "api_key_invalid")
    assert stored_count(app) == 0


def test_a_bad_idempotency_key_is_400(app, client, api_headers):
    response = client.post(BULK, headers={**api_headers, "Idempotency-Key": "x" * 256},
                           json={"notifications": [one("a")]})
    assert response.status_code == 400
    assert plain_error(response)["code"] == "validation_error"
    assert stored_count(app) == 0


# --- idempotency -------------------------------------------------------------------

def test_a_retry_replays_the_answer_exactly_and_stores_once(app, client, api_headers,
                                                            make_token, sio_client):
    headers = {**api_headers, "Idempotency-Key": "batch-1"}
    body = {"notifications": [one("alice", "a1"), {"user_ids": ["bob", "alice"], "type": "t",
                                                   "title": "ba"}]}
    first = client.post(BULK, headers=headers, json=body)
    alice = sio_client(auth={"token": make_token("alice")})
    alice.get_received()
    again = client.post(BULK, headers=headers, json=body)
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert stored_count(app) == 3
    assert received(alice) == []  # nothing emitted again


def test_a_reused_key_with_another_body_is_422(app, client, api_headers):
    headers = {**api_headers, "Idempotency-Key": "batch-2"}
    client.post(BULK, headers=headers, json={"notifications": [one("a", "one")]})
    response = client.post(BULK, headers=headers,
                           json={"notifications": [one("a", "one"), one("b")]})
    assert response.status_code == 422
    assert plain_error(response)["code"] == "idempotency_key_reused"
    assert stored_count(app) == 1


def test_a_key_is_never_replayed_across_the_two_routes(app, client, api_headers):
    """A body the single route takes, wrapped in a bulk request, with the key the single
    route used: a conflict, never the single route's answer in the bulk route's place
    (nor the other way round)."""
    headers = {**api_headers, "Idempotency-Key": "shared"}
    single = client.post("/api/notifications", headers=headers, json=one("a"))
    assert single.status_code == 201
    response = client.post(BULK, headers=headers, json={"notifications": [one("a")]})
    assert response.status_code == 422
    headers["Idempotency-Key"] = "bulk-first"
    assert client.post(BULK, headers=headers,
                       json={"notifications": [one("b")]}).status_code == 201
    response = client.post("/api/notifications", headers=headers,
                           json={"notifications": [one("b")]})
    assert response.status_code == 400  # not a notification object: refused before the key
    response = client.post("/api/notifications", headers=headers, json=one("b"))
    assert response.status_code == 422
    assert stored_count(app) == 2


# --- the write and the emits -------------------------------------------------------

def test_emits_reach_each_users_sockets_after_the_commit(app, client, api_headers,
                                                         make_token, sio_client, monkeypatch):
    from utils.extensions import db, socketio

    alice = sio_client(auth={"token": make_token("alice")})
    bob = sio_client(auth={"token": make_token("bob")})
    alice.get_received(), bob.get_received()
    visible_at_emit = []
    emit = socketio.emit

    def watching_emit(event, payload, *args, **kwargs):
        if event == "notification":
            # Another connection sees the row only once its transaction committed.
            with db.engine.connect() as conn:
                visible_at_emit.append(conn.execute(
                    sa.text("SELECT count(*) FROM notifications WHERE id = :id"),
                    {"id": payload["id"]}).scalar_one())
        return emit(event, payload, *args, **kwargs)

    monkeypatch.setattr(socketio, "emit", watching_emit)
    objects = [one("alice", "first"), {"user_ids": ["bob", "alice"], "type": "t",
                                       "title": "both"}, one("bob", "last")]
    response = client.post(BULK, headers=api_headers, json={"notifications": objects})
    results = response.get_json()["results"]
    assert visible_at_emit == [1, 1, 1, 1]
    got_alice, got_bob = received(alice), received(bob)
    assert [(n["id"], n["title"]) for n in got_alice] == [
        (results[0]["notifications"][0]["id"], "first"),
        (results[1]["notifications"][1]["id"], "both")]
    assert [(n["id"], n["title"]) for n in got_bob] == [
        (results[1]["notifications"][0]["id"], "both"),
        (results[2]["notifications"][0]["id"], "last")]
    assert set(got_alice[0]) >= {"id", "type", "title", "body", "data", "created_at"}


def test_push_always_wakes_the_dispatcher_once(app, client, api_headers, monkeypatch):
    from utils.services import services

    woken = []
    dispatcher = services(app).dispatcher
    monkeypatch.setattr(dispatcher, "wake", lambda: woken.append(1))
    client.post(BULK, headers=api_headers,
                json={"notifications": [one("a"), one("b", push="never")]})
    assert woken == []
    client.post(BULK, headers=api_headers,
                json={"notifications": [one("a", push="always"), one("b", push="always")]})
    assert woken == [1]


def test_a_bulk_request_is_one_transaction_of_the_group_commit(app, client, api_headers):
    from utils.ops import metrics

    def groups():
        return metrics.REGISTRY.get_sample_value("notifier_notification_write_groups_total")

    before = groups()
    objects = [one(f"u{i}") for i in range(50)]
    assert client.post(BULK, headers=api_headers,
                       json={"notifications": objects}).status_code == 201
    assert groups() == before + 1


def test_notify_many_is_the_stored_answer_a_consumer_can_reuse(app):
    """The function the bulk route calls, for other callers (an outbox consumer)."""
    from utils.notifications.notifier import BULK as SCOPE
    from utils.notifications.notifier import IdempotencyConflict, fingerprint, notify_many
    from utils.notifications.validation import notification_request

    objects = [notification_request(one("a")), notification_request(one("b", "x"))]
    with app.test_request_context():
        first = notify_many(objects, "row-1", fingerprint({"row": 1}, SCOPE))
        again = notify_many(objects, "row-1", fingerprint({"row": 1}, SCOPE))
        with pytest.raises(IdempotencyConflict):
            notify_many(objects[:1], "row-1", fingerprint({"row": 2}, SCOPE))
    assert [r["notifications"][0]["user_id"] for r in first.response["results"]] == ["a", "b"]
    assert (first.replayed, again.replayed, again.response) == (False, True, first.response)
    assert stored_count(app) == 2
    assert fingerprint({"a": 1}) != fingerprint({"a": 1}, SCOPE)
