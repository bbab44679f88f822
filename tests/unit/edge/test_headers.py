"""HTTP hygiene: security headers on every response (Engine.IO's included), a CSP
that fits /debug, HSTS in production only, CORS for the allowlist only, and JSON-only
request bodies. The Server header is checked on real gunicorn in
test_security_server.py (the test client has no server)."""

from __future__ import annotations

import json

import pytest

from tests.support.app import API_KEY, ORIGIN, build_app
from utils.edge.headers import content_security_policy

FOREIGN = "https://evil.example"


def paths(client, make_token):
    token = make_token()
    return [
        client.get("/healthz"),
        client.get("/api/notifications"),  # 401
        client.get("/api/notifications", headers={"Authorization": f"Bearer {token}"}),
        client.post("/api/notifications", data="x", headers={"Content-Type": "text/plain"}),
        client.get("/no-such-page"),  # 404
        client.delete("/api/notifications"),  # 405
        client.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": ORIGIN}),
        client.get("/socket.io/?EIO=4&transport=polling&sid=nope"),  # the guard's 400
    ]


def test_security_headers_on_every_response(client, make_token):
    for response in paths(client, make_token):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "Strict-Transport-Security" not in response.headers  # development


def test_hsts_in_production_only(tmp_path):
    production = build_app(tmp_path, APP_ENV="production")
    response = production.test_client().get("/healthz")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_csp_lets_debug_load_its_files_and_sockets_and_nothing_else():
    csp = content_security_policy("notify.example.com")
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no other host
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["connect-src"] == \
        "'self' ws://notify.example.com wss://notify.example.com"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe" not in csp


@pytest.mark.parametrize("host", ["evil.example; script-src *", "a b", "x\r\ny", "", None,
                                  "h" * 300])
def test_csp_never_carries_a_strange_host(host):
    csp = content_security_policy(host)
    assert "connect-src 'self';" in csp
    assert "*" not in csp


def test_csp_with_a_port_and_ipv6():
    assert "ws://127.0.0.1:8000 " in content_security_policy("127.0.0.1:8000")
    assert "wss://[::1]:8000;" in content_security_policy("[::1]:8000")


# ---------------------------------------------------------------- CORS

def test_cors_only_for_the_allowlist(client, make_token):
    headers = {"Authorization": f"Bearer {make_token()}"}
    allowed = client.get("/api/notifications", headers={**headers, "Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    foreign = client.get("/api/notifications", headers={**headers, "Origin": FOREIGN})
    assert "Access-Control-Allow-Origin" not in foreign.headers
    null = client.get("/api/notifications", headers={**headers, "Origin": "null"})
    assert "Access-Control-Allow-Origin" not in null.headers
    lookalike = client.get("/api/notifications",
                           headers={**headers, "Origin": ORIGIN + ".evil.example"})
    assert "Access-Control-Allow-Origin" not in lookalike.headers


def test_no_wildcard_cors_anywhere(client, make_token):
    for response in paths(client, make_token):
        assert response.headers.get("Access-Control-Allow-Origin") != "*"


def test_an_engineio_session_this_process_does_not_hold_is_400_without_the_sid(client):
    """The guard answers made-up and ended sessions itself (utils/edge/eio_guard.py),
    in the error shape, never echoing the sid (python-engineio's answer does)."""
    made_up = "made-up-" + "s" * 500
    opened = client.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": ORIGIN})
    issued = json.loads(opened.get_data(as_text=True)[1:])["sid"]
    url = f"/socket.io/?EIO=4&transport=polling&sid={issued}"
    assert client.post(url, data="1", headers={"Origin": ORIGIN}).status_code == 200
    for sid in (made_up, issued):  # the issued one ended with its CLOSE packet
        url = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        for response in (client.get(url), client.post(url, data="40")):
            assert response.status_code == 400
            assert response.get_json()["error"]["code"] == "unknown_session"
            assert sid not in response.get_data(as_text=True)


def test_engineio_refuses_a_foreign_origin(client):
    response = client.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": FOREIGN})
    assert response.status_code == 400
    assert "Access-Control-Allow-Origin" not in response.headers


# ---------------------------------------------------------------- JSON only

@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "text/json", None,
])
def test_non_json_bodies_are_415(client, make_token, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    producer = client.post("/api/notifications", data='{"user_id": "a"}',
                           headers={**headers, "Authorization": f"Bearer {API_KEY}"})
    assert producer.status_code == 415
    assert producer.get_json()["error"]["code"] == "unsupported_media_type"
    reader = client.post("/api/notifications/read", data='{"all": true}',
                         headers={**headers, "Authorization": f"Bearer {make_token()}"})
    assert reader.status_code == 415


def test_json_with_a_charset_is_accepted(client):
    response = client.post("/api/notifications", data='{"user_id": "a", "type": "t", '
                           '"title": "x"}', headers={
                               "Content-Type": "application/json; charset=utf-8",
                               "Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 201


def test_csp_admits_an_external_socketio_client_for_debug(tmp_path):
    app = build_app(tmp_path, SOCKETIO_CLIENT_URL="https://cdn.example.com/socket.io.min.js")
    csp = app.test_client().get("/healthz").headers["Content-Security-Policy"]
    assert "script-src 'self' https://cdn.example.com;" in csp
    assert "connect-src 'self' ws://localhost wss://localhost;" in csp
