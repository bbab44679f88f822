"""Limits: HTTP rate limits per client and per API key (429 + Retry-After), shared
through Redis; the per-socket token bucket; sockets per user; connects per IP; body
and Engine.IO buffer limits."""

from __future__ import annotations

import random
import time
import uuid

import pytest
from flask_socketio import ConnectionRefusedError

from tests.support.app import API_KEY, ORIGIN, build_app
from tests.support.services import REDIS_HOST, REDIS_PORT, SHARED_REDIS, require_service
from utils.config.settings import Settings
from utils.edge.addresses import client_ip
from utils.edge.limits import SocketLimits
from utils.extensions import socketio
from utils.services import services


def producer_headers(key: str = API_KEY) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def unread(client, token, ip="10.1.1.1", **headers):
    return client.get("/api/notifications/unread-count",
                      headers={"Authorization": f"Bearer {token}", **headers},
                      environ_base={"REMOTE_ADDR": ip})


def assert_rate_limited(response):
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert set(response.get_json()["error"]) == {"code", "message"}
    assert 1 <= int(response.headers["Retry-After"]) <= 60


@pytest.fixture
def limited(tmp_path):
    return build_app(tmp_path, RATE_LIMIT_HTTP="3/minute", RATE_LIMIT_API_KEY="5/minute")


def token_for(app, user="alice"):
    from utils.auth.tokens import create_access_token

    with app.app_context():
        return create_access_token(user, 600)


# ---------------------------------------------------------------- HTTP

def test_http_limit_per_client_gives_429_with_retry_after(limited):
    client, token = limited.test_client(), token_for(limited)
    for _ in range(3):
        assert unread(client, token).status_code == 200
    assert_rate_limited(unread(client, token))
    # another client address has its own budget
    assert unread(client, token, ip="10.1.1.2").status_code == 200


def test_limited_responses_say_how_much_budget_is_left(limited):
    client, token = limited.test_client(), token_for(limited)
    now = time.time()
    seen = [unread(client, token, ip="10.9.9.9").headers for _ in range(3)]
    assert [h["X-RateLimit-Limit"] for h in seen] == ["3"] * 3
    assert [h["X-RateLimit-Remaining"] for h in seen] == ["2", "1", "0"]
    assert all(now <= int(h["X-RateLimit-Reset"]) <= now + 121 for h in seen)
    assert all(0 <= int(h["X-RateLimit-Retry-After"]) <= 120 for h in seen)
    assert all("Retry-After" not in h for h in seen)  # only on 429 and 503
    refused = unread(client, token, ip="10.9.9.9")
    assert_rate_limited(refused)
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def test_one_address_has_one_budget_across_routes(limited):
    client, token = limited.test_client(), token_for(limited)
    auth = {"Authorization": f"Bearer {token}"}
    assert unread(client, token, ip="10.8.8.8").status_code == 200
    assert client.get("/api/notifications", headers=auth,
                      environ_base={"REMOTE_ADDR": "10.8.8.8"}).status_code == 200
    assert unread(client, token, ip="10.8.8.8").status_code == 200
    assert_rate_limited(client.get("/api/notifications", headers=auth,
                                   environ_base={"REMOTE_ADDR": "10.8.8.8"}))


def test_an_unreachable_limit_store_counts_in_memory_and_says_so(tmp_path, caplog):
    """Nothing listens on the storage's port: requests still pass, the limit still
    holds (in this process), and one warning names the problem."""
    app = build_app(tmp_path, RATE_LIMIT_HTTP="3/minute",
                    RATE_LIMIT_STORAGE_URL="redis://127.0.0.1:9/0")
    client, token = app.test_client(), token_for(app)
    with caplog.at_level("WARNING", logger="utils.edge.limits"):
        codes = [unread(client, token).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    warnings = [r.getMessage() for r in caplog.records if "rate-limit storage" in r.getMessage()]
    assert len(warnings) == 1


def test_x_forwarded_for_is_ignored_without_trusted_proxies(limited):
    client, token = limited.test_client(), token_for(limited)
    for i in range(3):
        unread(client, token, **{"X-Forwarded-For": f"203.0.113.{i}"})
    # rotating the header does not buy a fresh budget
    assert_rate_limited(unread(client, token, **{"X-Forwarded-For": "203.0.113.99"}))


@pytest.mark.parametrize("forwarded, peer, expected", [
    ("203.0.113.7", "10.0.0.1", "203.0.113.7"),
    ("198.51.100.1, 203.0.113.7", "10.0.0.1", "203.0.113.7"),  # a spoofed first entry
    ("", "10.0.0.1", "10.0.0.1"),  # the edge appended nothing: the peer stands
])
def test_a_hop_count_trusts_the_nearest_proxy_whatever_its_address(forwarded, peer, expected):
    from utils.edge.addresses import client_ip

    environ = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded}
    assert client_ip(environ, (), hops=1) == expected
    assert client_ip(environ, ()) == peer


def test_trusted_proxies_hop_count_is_parsed(tmp_path):
    from utils.config.settings import ConfigError, load_settings

    settings = load_settings({"TRUSTED_PROXIES": "1"}, tmp_path)
    assert (settings.trusted_proxy_hops, settings.trusted_proxies) == (1, ())
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        load_settings({"TRUSTED_PROXIES": "0"}, tmp_path)


def test_x_forwarded_for_is_honoured_from_a_trusted_proxy(tmp_path):
    app = build_app(tmp_path, RATE_LIMIT_HTTP="2/minute", TRUSTED_PROXIES="10.0.0.0/8")
    client, token = app.test_client(), token_for(app)
    for _ in range(2):
        assert unread(client, token, **{"X-Forwarded-For": "203.0.113.7"}).status_code == 200
    assert_rate_limited(unread(client, token, **{"X-Forwarded-For": "203.0.113.7"}))
    assert unread(client, token, **{"X-Forwarded-For": "203.0.113.8"}).status_code == 200


def test_client_ip_walks_only_past_trusted_hops():
    trusted = ("10.0.0.0/8",)
    env = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 2.2.2.2, 10.0.0.9"}
    assert client_ip(env, trusted) == "2.2.2.2"  # 1.1.1.1 is the client's own claim
    assert client_ip(env, ()) == "10.0.0.5"
    assert client_ip({"REMOTE_ADDR": "8.8.8.8", "HTTP_X_FORWARDED_FOR": "1.1.1.1"},
                     trusted) == "8.8.8.8"  # an untrusted peer cannot claim anything
    assert client_ip({"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "junk, ,"},
                     trusted) == "junk"


def test_producer_is_limited_per_api_key_not_per_address(limited):
    client = limited.test_client()
    body = {"user_id": "u", "type": "t", "title": "x"}
    for _ in range(5):  # above the per-address limit of 3: the key's own budget applies
        response = client.post("/api/notifications", json=body, headers=producer_headers(),
                               environ_base={"REMOTE_ADDR": "10.2.2.2"})
        assert response.status_code == 201
    assert_rate_limited(client.post("/api/notifications", json=body,
                                    headers=producer_headers(),
                                    environ_base={"REMOTE_ADDR": "10.2.2.3"}))


def test_wrong_api_keys_are_limited_per_address(limited):
    client = limited.test_client()
    for i in range(3):
        response = client.post("/api/notifications", json={}, environ_base={
            "REMOTE_ADDR": "10.3.3.3"}, headers=producer_headers(f"guess-{i}"))
        assert response.status_code == 401
    assert_rate_limited(client.post("/api/notifications", json={}, environ_base={
        "REMOTE_ADDR": "10.3.3.3"}, headers=producer_headers("guess-x")))


def test_health_is_never_rate_limited(limited):
    client = limited.test_client()
    for _ in range(10):
        assert client.get("/healthz").status_code == 200


def test_limits_can_be_turned_off(tmp_path):
    app = build_app(tmp_path, RATE_LIMIT_HTTP="0")
    client, token = app.test_client(), token_for(app)
    assert all(unread(client, token).status_code == 200 for _ in range(30))


@pytest.mark.redis
def test_limits_are_shared_through_redis(tmp_path):
    """Two app instances (two processes' worth of state) share one budget in Redis."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    url = SHARED_REDIS
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = build_app(tmp_path / "a", RATE_LIMIT_HTTP="3/minute", RATE_LIMIT_STORAGE_URL=url)
    second = build_app(tmp_path / "b", RATE_LIMIT_HTTP="3/minute", RATE_LIMIT_STORAGE_URL=url)
    # A fresh address per run, so nothing else using this Redis shares the budget.
    ip = f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    token = token_for(first)
    assert unread(first.test_client(), token, ip=ip).status_code == 200
    assert unread(second.test_client(), token, ip=ip).status_code == 200
    assert unread(first.test_client(), token, ip=ip).status_code == 200
    assert_rate_limited(unread(second.test_client(), token, ip=ip))


def test_redis_storage_is_the_default_when_redis_url_is_set(tmp_path):
    from utils.config.settings import load_settings

    settings = load_settings({"REDIS_URL": "redis://127.0.0.1:6379/0"}, tmp_path)
    assert settings.rate_limit_storage_url == "redis://127.0.0.1:6379/0"
    assert load_settings({}, tmp_path).rate_limit_storage_url == "memory://"


# ---------------------------------------------------------------- body limits

@pytest.mark.parametrize("route, headers", [
    ("/api/notifications", "producer"),
    ("/api/notifications/read", "user"),
    ("/debug/token", "none"),  # the development page's token helper
])
def test_every_rest_body_limit_is_413(app, client, make_token, route, headers):
    sent = {"Content-Type": "application/json"}
    if headers == "producer":
        sent = producer_headers()
    elif headers == "user":
        sent["Authorization"] = f"Bearer {make_token()}"
    big = '{"ids": [' + ",".join(["1"] * 140_000) + "]}"  # > 256 KiB
    response = client.post(route, data=big, headers=sent)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_field_limits_inside_the_body_are_400(client):
    body = {"user_ids": [f"u{i}" for i in range(1001)], "type": "t", "title": "x"}
    response = client.post("/api/notifications", json=body, headers=producer_headers())
    assert response.status_code == 400
    body = {"user_id": "u", "type": "t", "title": "x", "data": {"k": "v" * 9000}}
    assert client.post("/api/notifications", json=body,
                       headers=producer_headers()).status_code == 400


def test_socketio_buffer_size_is_configured(tmp_path):
    app = build_app(tmp_path, MAX_HTTP_BUFFER_SIZE="2048")
    assert services(app).settings.max_http_buffer_size == 2048
    assert socketio.server.eio.max_http_buffer_size == 2048


# ---------------------------------------------------------------- sockets

def connect(app, token, **kw):
    return socketio.test_client(app, auth={"token": token}, headers={"Origin": ORIGIN}, **kw)


def test_event_bucket_acks_errors_then_a_flood_disconnects(tmp_path):
    app = build_app(tmp_path, SOCKET_EVENT_BURST="3", SOCKET_EVENT_RATE="0.01",
                    SOCKET_FLOOD_LIMIT="5")
    client = connect(app, token_for(app))
    assert client.is_connected()
    acks = [client.emit("sync", {"after_id": 0}, callback=True) for _ in range(3)]
    assert all("notifications" in ack for ack in acks)
    refused = client.emit("sync", {"after_id": 0}, callback=True)
    assert refused == {"error": {"code": "rate_limited", "message": "too many events; slow down"}}
    assert client.is_connected()  # one excess event costs an ack, not the socket
    for _ in range(3):
        client.emit("sync", {"after_id": 0}, callback=True)
    assert client.is_connected()
    client.emit("sync", {"after_id": 0})  # the fifth refusal in a row
    assert not client.is_connected()


def test_event_bucket_refills_with_time(tmp_path):
    app = build_app(tmp_path, SOCKET_EVENT_BURST="2", SOCKET_EVENT_RATE="1")
    now = [100.0]
    services(app).socket_limits.clock = lambda: now[0]
    client = connect(app, token_for(app))
    for _ in range(2):
        assert "notifications" in client.emit("sync", {}, callback=True)
    assert client.emit("sync", {}, callback=True)["error"]["code"] == "rate_limited"
    now[0] += 1.0
    assert "notifications" in client.emit("sync", {}, callback=True)
    assert client.emit("sync", {}, callback=True)["error"]["code"] == "rate_limited"


def test_unknown_events_count_against_the_bucket(tmp_path):
    app = build_app(tmp_path, SOCKET_EVENT_BURST="1", SOCKET_EVENT_RATE="0.01")
    client = connect(app, token_for(app))
    assert client.emit("nope", {}, callback=True)["error"]["code"] == "unknown_event"
    assert client.emit("nope", {}, callback=True)["error"]["code"] == "rate_limited"


def test_sockets_per_user_are_capped(tmp_path):
    app = build_app(tmp_path, MAX_SOCKETS_PER_USER="2")
    token = token_for(app)
    first, second = connect(app, token), connect(app, token)
    assert first.is_connected() and second.is_connected()
    assert not connect(app, token).is_connected()
    assert connect(app, token_for(app, "bob")).is_connected()  # other users unaffected
    first.disconnect()
    assert connect(app, token).is_connected()  # a closed socket frees its place


def test_connection_attempts_per_ip_are_capped(tmp_path):
    app = build_app(tmp_path, CONNECT_RATE_PER_IP="3")
    token = token_for(app)
    assert not connect(app, "garbage").is_connected()  # refused attempts count too
    assert connect(app, token).is_connected()
    assert connect(app, token).is_connected()
    assert not connect(app, token).is_connected()


def test_refusal_codes_for_caps():
    settings = Settings(max_sockets_per_user=1, connect_rate_per_ip=1,
                        rate_limit_storage_url="memory://")
    limits = SocketLimits(settings)
    limits.check_user_cap(0)
    with pytest.raises(ConnectionRefusedError) as excinfo:
        limits.check_user_cap(1)
    assert excinfo.value.error_args == {"message": "rate_limited",
                                        "data": {"code": "too_many_connections"}}
    env = {"REMOTE_ADDR": f"10.9.{uuid.uuid4().int % 250}.1"}
    limits.check_connect(env)
    with pytest.raises(ConnectionRefusedError) as excinfo:
        limits.check_connect(env)
    assert excinfo.value.error_args["data"] == {"code": "too_many_attempts"}


def test_engineio_handshakes_per_ip_are_capped(tmp_path):
    """Sessions that never send a Socket.IO CONNECT: twice the connect budget."""
    app = build_app(tmp_path, CONNECT_RATE_PER_IP="2")
    client = app.test_client()

    def handshake(ip):
        return client.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": ORIGIN},
                          environ_base={"REMOTE_ADDR": ip})

    assert [handshake("10.7.7.7").status_code for _ in range(4)] == [200] * 4
    refused = handshake("10.7.7.7")
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "60"
    assert handshake("10.7.7.8").status_code == 200
