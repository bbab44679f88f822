"""The HTTP API: the producer endpoint, the inbox, and the error shape."""

import pytest

from tests.support.app import API_KEY, ORIGIN


def error_of(response):
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["code"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# --- producers -------------------------------------------------------------------

def test_create_one(client, api_headers):
    response = client.post("/api/notifications", headers=api_headers, json={
        "user_id": "alice", "type": "comment", "title": "Bob replied", "body": "Nice",
        "data": {"post": 7}})
    assert response.status_code == 201
    assert response.get_json() == {"notifications": [{"id": 1, "user_id": "alice"}]}


def test_create_many_in_order(client, api_headers):
    response = client.post("/api/notifications", headers=api_headers, json={
        "user_ids": ["a", "b", 3], "type": "t", "title": "x"})
    assert response.status_code == 201
    rows = response.get_json()["notifications"]
    assert [r["user_id"] for r in rows] == ["a", "b", "3"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_ids_increase_with_creation(notify):
    first = notify("a")[0]
    second = notify("b")[0]
    assert second > first


@pytest.mark.parametrize("headers, status, code", [
    ({}, 401, "api_key_missing"),
    ({"Authorization": "Bearer wrong-key"}, 401, "api_key_invalid"),
    ({"Authorization": f"Basic {API_KEY}"}, 401, "api_key_missing"),
])
def test_producer_key_required(client, headers, status, code):
    response = client.post("/api/notifications", headers=headers,
                           json={"user_id": "a", "type": "t", "title": "x"})
    assert response.status_code == status
    assert error_of(response) == code
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="notifications"')
    # RFC 6750 3.1: wrong credentials are invalid_token; none at all carry no error
    assert ('error="invalid_token"' in challenge) == (code == "api_key_invalid")


def test_user_token_is_not_a_producer_key(client, make_token):
    response = client.post("/api/notifications", headers=bearer(make_token("alice")),
                           json={"user_id": "a", "type": "t", "title": "x"})
    assert response.status_code == 401


@pytest.mark.parametrize("body, fragment", [
    ([], "JSON object"),
    ("text", "JSON object"),
    ({"type": "t", "title": "x"}, "user_id"),
    ({"user_id": "a", "user_ids": ["b"], "type": "t", "title": "x"}, "not both"),
    ({"user_ids": [], "type": "t", "title": "x"}, "user_ids"),
    ({"user_ids": "a", "type": "t", "title": "x"}, "user_ids"),
    ({"user_ids": [str(i) for i in range(1001)], "type": "t", "title": "x"}, "1000"),
    ({"user_ids": [None], "type": "t", "title": "x"}, "user_ids"),
    ({"user_id": None, "type": "t", "title": "x"}, "user_id"),
    ({"user_id": True, "type": "t", "title": "x"}, "user_id"),
    ({"user_id": "", "type": "t", "title": "x"}, "user_id"),
    ({"user_id": "u" * 129, "type": "t", "title": "x"}, "user_id"),
    ({"user_id": {"a": 1}, "type": "t", "title": "x"}, "user_id"),
    ({"user_id": "a", "title": "x"}, "type"),
    ({"user_id": "a", "type": "", "title": "x"}, "type"),
    ({"user_id": "a", "type": 5, "title": "x"}, "type"),
    ({"user_id": "a", "type": "t" * 65, "title": "x"}, "type"),
    ({"user_id": "a", "type": "t"}, "title"),
    ({"user_id": "a", "type": "t", "title": "   "}, "title"),
    ({"user_id": "a", "type": "t", "title": "x" * 201}, "title"),
    ({"user_id": "a", "type": "t", "title": ["x"]}, "title"),
    ({"user_id": "a", "type": "t", "title": "x", "body": "b" * 2001}, "body"),
    ({"user_id": "a", "type": "t", "title": "x", "body": 1}, "body"),
    ({"user_id": "a", "type": "t", "title": "x", "data": []}, "data"),
    ({"user_id": "a", "type": "t", "title": "x", "data": "s"}, "data"),
    ({"user_id": "a", "type": "t", "title": "x", "data": {"k": "v" * 8200}}, "data"),
])
def test_producer_validation(client, api_headers, body, fragment):
    response = client.post("/api/notifications", headers=api_headers, json=body)
    assert response.status_code == 400
    assert error_of(response) == "validation_error"
    assert fragment in response.get_json()["error"]["message"]


def test_limits_are_inclusive(client, api_headers):
    body = {"user_ids": [str(i) for i in range(1000)], "type": "t" * 64, "title": "x" * 200,
            "body": "b" * 2000, "data": {"k": "v" * 8000}}
    assert client.post("/api/notifications", headers=api_headers, json=body).status_code == 201


def nested(levels):
    """A ``data`` object ``levels`` deep, itself included."""
    value = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("body, fragment", [
    ({"user_id": "a", "type": "t", "title": "x", "data": nested(33)}, "deeper than 32"),
    ({"user_id": "a", "type": "t", "title": "x", "data": {"k": [nested(32)]}},
     "deeper than 32"),
    ({"user_id": "\ud800", "type": "t", "title": "x"}, "user_id must be valid Unicode"),
    ({"user_ids": ["a", "\udfff"], "type": "t", "title": "x"},
     "user_ids[] must be valid Unicode"),
    ({"user_id": "a", "type": "t\ud800", "title": "x"}, "type must be valid Unicode"),
    ({"user_id": "a", "type": "t", "title": "bad \ud800 title"},
     "title must be valid Unicode"),
    ({"user_id": "a", "type": "t", "title": "x", "body": "\udc00"},
     "body must be valid Unicode"),
    ({"user_id": "a", "type": "t", "title": "x", "data": {"k": ["\ud800"]}},
     "data must be valid Unicode"),
    ({"user_id": "a", "type": "t", "title": "x", "data": {"\ud800": 1}},
     "data must be valid Unicode"),
])
def test_data_that_would_break_delivery_is_refused(client, api_headers, body, fragment):
    """F4: before, the lone surrogates were a 500 with a traceback and the deep data
    was stored (201), then broke the emit and every replay of that user."""
    response = client.post("/api/notifications", headers=api_headers, json=body)
    assert response.status_code == 400
    assert error_of(response) == "validation_error"
    assert fragment in response.get_json()["error"]["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("path, template", [
    ("/api/notifications", '{"user_id": "a", "type": "t", "title": "x", "data": {"v": %s}}'),
    ("/api/notifications", '{"user_id": "a", "type": "t", "title": "x", "extra": [%s]}'),
    ("/api/notifications/read", '{"all": true, "extra": %s}'),
], ids=["data", "unknown key", "read"])
def test_nan_and_infinity_are_refused_in_any_body(client, api_headers, make_token, literal,
                                                 path, template):
    """Python's json reads them; JSON has no such values and browsers' JSON.parse throws
    on the feed that carries them (before: 201 and 200)."""
    headers = api_headers if path == "/api/notifications" else {
        **bearer(make_token()), "Content-Type": "application/json"}
    response = client.post(path, headers=headers, data=template % literal)
    assert response.status_code == 400
    assert error_of(response) == "validation_error"
    assert f"the body holds {literal}," in response.get_json()["error"]["message"]


def test_data_check_refuses_nan_and_depth_from_any_caller():
    """The CLI's --data reaches the same check without the HTTP parser; the depth check
    loops, so a structure far deeper than Python's recursion limit is refused too."""
    from utils.errors import ValidationError
    from utils.notifications.validation import notification_request

    deep = []
    for _ in range(100_000):
        deep = [deep]
    for data, fragment in [({"v": [1.5, float("nan")]}, "NaN"), ({"v": deep}, "deeper")]:
        with pytest.raises(ValidationError, match=fragment):
            notification_request({"user_id": "a", "type": "t", "title": "x", "data": data})


def test_data_nested_32_levels_is_stored_and_served(client, api_headers, make_token):
    data = nested(32)
    response = client.post("/api/notifications", headers=api_headers,
                           json={"user_id": "alice", "type": "t", "title": "x", "data": data})
    assert response.status_code == 201
    inbox = client.get("/api/notifications", headers=bearer(make_token("alice"))).get_json()
    assert inbox["notifications"][0]["data"] == data


@pytest.mark.parametrize("path", ["/api/notifications", "/api/notifications/read"])
def test_json_nested_past_the_parsers_depth_is_400(client, api_headers, make_token, path):
    """F6: 5,000 ``[`` made the parser's RecursionError escape: a 500 with a traceback."""
    headers = api_headers if path == "/api/notifications" else {
        **bearer(make_token()), "Content-Type": "application/json"}
    response = client.post(path, headers=headers, data="[" * 5000)
    assert response.status_code == 400
    assert error_of(response) == "invalid_json"


def test_bad_json_is_400(client, api_headers):
    response = client.post("/api/notifications", headers=api_headers, data="{not json")
    assert response.status_code == 400
    assert error_of(response) == "invalid_json"


def test_wrong_content_type_is_415(client):
    response = client.post("/api/notifications", data="user_id=a",
                           headers={"Authorization": f"Bearer {API_KEY}",
                                    "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert error_of(response) == "unsupported_media_type"


def test_oversized_body_is_413(client, api_headers):
    response = client.post("/api/notifications", headers=api_headers,
                           data='{"pad": "' + "x" * 300_000 + '"}')
    assert response.status_code == 413
    assert error_of(response) == "payload_too_large"


@pytest.mark.parametrize("size, status", [(300_000, 413), (100_000, 201)])
def test_a_chunked_body_is_413_past_the_limit_and_whole_below_it(client, api_headers, size,
                                                                  status):
    """Transfer-Encoding: chunked, as gunicorn hands it over (no Content-Length, the
    stream terminated by the server): the limit holds, and no body is read cut short."""
    import io

    body = ('{"user_id": "a", "type": "t", "title": "x", "pad": "' + "x" * size + '"}').encode()
    response = client.post("/api/notifications",
                           headers={**api_headers, "Transfer-Encoding": "chunked"},
                           input_stream=io.BytesIO(body),
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == status, response.get_json()
    if status == 413:
        assert error_of(response) == "payload_too_large"


def test_unknown_route_and_method_are_json(client):
    assert error_of(client.get("/nope")) == "not_found"
    response = client.delete("/api/notifications")
    assert response.status_code == 405
    assert error_of(response) == "method_not_allowed"


def test_unexpected_errors_are_500_without_traceback(app, client):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = client.get("/boom")
    assert response.status_code == 500
    assert error_of(response) == "internal_error"
    assert b"secret internals" not in response.data
    assert b"Traceback" not in response.data


# --- idempotency ---------------------------------------------------------------

def test_idempotent_retry_returns_first_answer_and_stores_once(client, api_headers, make_token):
    headers = {**api_headers, "Idempotency-Key": "order-42"}
    body = {"user_id": "alice", "type": "t", "title": "once"}
    first = client.post("/api/notifications", headers=headers, json=body)
    second = client.post("/api/notifications", headers=headers, json=body)
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    inbox = client.get("/api/notifications", headers=bearer(make_token("alice"))).get_json()
    assert len(inbox["notifications"]) == 1


def test_idempotency_key_reused_with_another_body_is_422(client, api_headers):
    headers = {**api_headers, "Idempotency-Key": "k1"}
    client.post("/api/notifications", headers=headers,
                json={"user_id": "a", "type": "t", "title": "one"})
    response = client.post("/api/notifications", headers=headers,
                           json={"user_id": "a", "type": "t", "title": "two"})
    assert response.status_code == 422
    assert error_of(response) == "idempotency_key_reused"


def test_idempotency_key_expires_after_24_hours(app, client, api_headers):
    from datetime import timedelta

    from utils.extensions import db
    from utils.notifications.models import IdempotencyKey

    headers = {**api_headers, "Idempotency-Key": "old"}
    body = {"user_id": "a", "type": "t", "title": "x"}
    first = client.post("/api/notifications", headers=headers, json=body).get_json()
    with app.app_context():
        row = db.session.get(IdempotencyKey, "old")
        row.created_at = row.created_at - timedelta(hours=25)
        db.session.commit()
    again = client.post("/api/notifications", headers=headers, json=body)
    assert again.status_code == 201
    assert again.get_json() != first
    assert "Idempotent-Replayed" not in again.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\x01key", "nul\x00key", "\ud800key"])
def test_bad_idempotency_keys(client, api_headers, key):
    response = client.post("/api/notifications", headers={**api_headers, "Idempotency-Key": key},
                           json={"user_id": "a", "type": "t", "title": "x"})
    assert response.status_code == 400
    assert error_of(response) == "validation_error"


# --- the inbox -------------------------------------------------------------------

def test_inbox_requires_a_user_token(client):
    assert error_of(client.get("/api/notifications")) == "token_missing"
    assert error_of(client.get("/api/notifications", headers=bearer("junk"))) == "token_invalid"
    response = client.get("/api/notifications/unread-count", headers=bearer(API_KEY))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == \
        'Bearer realm="notifications", error="invalid_token"'
    missing = client.get("/api/notifications/unread-count")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="notifications"'


def test_inbox_newest_first_with_cursor(client, notify, make_token):
    ids = [notify("alice", title=f"n{i}")[0] for i in range(5)]
    notify("bob")
    headers = bearer(make_token("alice"))
    page1 = client.get("/api/notifications?limit=2", headers=headers).get_json()
    assert [n["id"] for n in page1["notifications"]] == ids[:-3:-1]
    assert page1["next_before"] == ids[3]
    assert page1["unread_count"] == 5
    page2 = client.get(f"/api/notifications?limit=2&before={page1['next_before']}",
                       headers=headers).get_json()
    assert [n["id"] for n in page2["notifications"]] == [ids[2], ids[1]]
    page3 = client.get(f"/api/notifications?limit=2&before={page2['next_before']}",
                       headers=headers).get_json()
    assert [n["id"] for n in page3["notifications"]] == [ids[0]]
    assert page3["next_before"] is None


def test_inbox_item_shape(client, notify, make_token):
    notify("alice", type="comment", title="t", body="b", data={"x": [1]})
    item = client.get("/api/notifications", headers=bearer(make_token("alice"))
                      ).get_json()["notifications"][0]
    assert set(item) == {"id", "type", "title", "body", "data", "created_at", "read_at",
                         "delivered_at"}
    assert item["created_at"].endswith("Z") and "T" in item["created_at"]
    assert item["read_at"] is None and item["data"] == {"x": [1]}


def test_unread_filter_and_mark_read(client, notify, make_token):
    ids = [notify("alice")[0] for _ in range(3)]
    headers = bearer(make_token("alice"))
    response = client.post("/api/notifications/read", headers=headers, json={"ids": [ids[0]]})
    assert response.get_json() == {"updated": 1, "unread_count": 2}
    unread = client.get("/api/notifications?unread=1", headers=headers).get_json()
    assert [n["id"] for n in unread["notifications"]] == [ids[2], ids[1]]
    again = client.post("/api/notifications/read", headers=headers, json={"ids": [ids[0]]})
    assert again.get_json() == {"updated": 0, "unread_count": 2}
    everything = client.post("/api/notifications/read", headers=headers, json={"all": True})
    assert everything.get_json() == {"updated": 2, "unread_count": 0}
    assert client.get("/api/notifications/unread-count", headers=headers
                      ).get_json() == {"unread_count": 0}
    read_item = client.get("/api/notifications", headers=headers).get_json()["notifications"][0]
    assert read_item["read_at"].endswith("Z")


def test_users_never_see_or_change_each_other(client, notify, make_token):
    bobs = notify("bob")
    alice = bearer(make_token("alice"))
    assert client.get("/api/notifications", headers=alice).get_json()["notifications"] == []
    response = client.post("/api/notifications/read", headers=alice, json={"ids": bobs})
    assert response.get_json()["updated"] == 0
    assert client.get("/api/notifications/unread-count", headers=bearer(make_token("bob"))
                      ).get_json() == {"unread_count": 1}


@pytest.mark.parametrize("query, fragment", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"),
    ("limit=-1", "limit"), ("before=x", "before"), ("before=0", "before"),
    ("before=99999999999999999999999", "before"), ("limit=%C2%B2", "limit"),
])
def test_inbox_validation(client, make_token, query, fragment):
    response = client.get(f"/api/notifications?{query}", headers=bearer(make_token()))
    assert response.status_code == 400
    assert error_of(response) == "validation_error"
    assert fragment in response.get_json()["error"]["message"]


@pytest.mark.parametrize("body", [
    {}, {"ids": "1"}, {"ids": [0]}, {"ids": ["x"]}, {"ids": [1.5]}, {"all": False},
    {"all": True, "ids": [1]}, {"ids": list(range(1, 1002))}, [], {"ids": [True]},
])
def test_read_validation(client, make_token, body):
    response = client.post("/api/notifications/read", headers=bearer(make_token()), json=body)
    assert response.status_code == 400
    assert error_of(response) == "validation_error"


def test_mark_read_pushes_unread_count_to_every_socket(client, notify, make_token, sio_client):
    notify("alice")
    notify("alice")
    tab, phone = (sio_client(auth={"token": make_token("alice")}) for _ in range(2))
    tab.get_received(), phone.get_received()
    client.post("/api/notifications/read", headers=bearer(make_token("alice")),
                json={"all": True})
    for socket in (tab, phone):
        counts = [m["args"][0] for m in socket.get_received() if m["name"] == "unread_count"]
        assert counts == [{"unread_count": 0}]


# --- CORS ------------------------------------------------------------------------

def test_cors_for_allowed_origin_with_credentials(client, make_token):
    response = client.get("/api/notifications/unread-count",
                          headers={**bearer(make_token()), "Origin": ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]


def test_cors_preflight(client):
    response = client.options("/api/notifications/read", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_no_cors_for_foreign_origin(client, make_token):
    response = client.get("/api/notifications/unread-count",
                          headers={**bearer(make_token()), "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options("/api/notifications", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


# --- health --------------------------------------------------------------------

def test_healthz(client):
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok"
    assert body["async_mode"] == "threading"
    assert body["message_queue"] == "disabled"


def test_readyz(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["database"] == "ok"
    assert response.get_json()["message_queue"] == "disabled"


def test_readyz_reports_a_broken_database(tmp_path):
    from app import create_app

    broken = create_app({"APP_ENV": "development", "INSTANCE_PATH": str(tmp_path),
                         "ASYNC_MODE": "threading", "REDIS_URL": "",
                         "DATABASE_URL": f"sqlite:///{tmp_path}/missing-dir/x.db"})
    response = broken.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "error"
    assert response.get_json()["status"] == "error"


def test_a_database_connection_reset_is_503_not_500(client, api_headers, monkeypatch):
    """pg8000 under gevent raises the socket's ConnectionResetError unwrapped when the
    pool's pre-ping finds the server gone (seen in tests/server/test_faults.py on gevent)."""
    from utils.notifications import store

    def reset(*_args, **_kwargs):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(store, "insert_notifications", reset)
    response = client.post("/api/notifications", headers=api_headers,
                           json={"user_id": "a", "type": "t", "title": "x"})
    assert response.status_code == 503
    assert error_of(response) == "database_unavailable"
    assert response.headers["Retry-After"] == "5"
