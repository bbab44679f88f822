"""GET /debug and its helper routes, through the Flask test client. The page itself
is driven in real browsers by tests/browser/test_debug_browser.py."""

from __future__ import annotations

import re

import pytest

from tests.support.app import API_KEY, SECRET, build_app
from tests.support.client_package import require_build


@pytest.fixture
def prod_client(tmp_path):
    return build_app(tmp_path, APP_ENV="production").test_client()


def assert_not_found(response) -> None:
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_page_renders_without_inline_script_or_style(client):
    response = client.get("/debug")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # A CSP of default-src 'self' forbids inline code: every script has a src.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and " style=" not in html and " on" + "click=" not in html
    assert 'src="/debug/socket.io.min.js"' in html
    assert 'src="/static/debug.js"' in html and 'type="module"' in html
    assert response.headers["Cache-Control"] == "no-store"


def test_page_exposes_no_secret(client):
    html = client.get("/debug").get_data(as_text=True)
    assert SECRET not in html and API_KEY not in html


def test_socketio_client_served_from_node_modules(client):
    response = client.get("/debug/socket.io.min.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["Content-Type"]
    assert b"4.8.1" in response.data


def test_configured_client_url_wins(tmp_path):
    url = "https://cdn.example.com/socket.io-4.8.1.min.js"
    client = build_app(tmp_path, SOCKETIO_CLIENT_URL=url).test_client()
    response = client.get("/debug")
    assert f'src="{url}"' in response.get_data(as_text=True)
    # The server's CSP (utils/edge/headers.py) lets that one script origin in.
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self' https://cdn.example.com" in policy


def test_default_page_keeps_the_servers_csp(client):
    policy = client.get("/debug").headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "style-src 'self'" in policy


@pytest.mark.parametrize("url", ["javascript:alert(1)", "cdn.example.com/x.js",
                                 'https://x.example/"><script>'])
def test_bad_client_url_refuses_to_start(tmp_path, url):
    from app import create_app
    from utils.config.settings import ConfigError

    with pytest.raises(ConfigError, match="SOCKETIO_CLIENT_URL"):
        create_app({"INSTANCE_PATH": str(tmp_path), "SOCKETIO_CLIENT_URL": url})


def test_page_says_so_without_a_client(tmp_path, monkeypatch):
    from routes import debug

    monkeypatch.setattr(debug, "CLIENT_DIST", tmp_path / "missing")
    html = build_app(tmp_path).test_client().get("/debug").get_data(as_text=True)
    assert 'id="no-client"' in html and "socket.io.min.js" not in html
    assert_not_found(build_app(tmp_path).test_client().get("/debug/socket.io.min.js"))


def test_origin_check(client):
    allowed = client.get("/debug/origin?origin=http://localhost:3000").get_json()
    assert allowed == {"origin": "http://localhost:3000", "allowed": True}
    foreign = client.get("/debug/origin?origin=https://evil.example").get_json()
    assert foreign["allowed"] is False
    assert client.get("/debug/origin").get_json()["allowed"] is False


def test_development_mints_a_token_and_sends_a_test_notification(client):
    minted = client.post("/debug/token", json={"user_id": "dora"})
    assert minted.status_code == 200
    token = minted.get_json()["token"]
    inbox = client.get("/api/notifications", headers={"Authorization": f"Bearer {token}"})
    assert inbox.status_code == 200
    sent = client.post("/debug/notify", headers={"Authorization": f"Bearer {token}"})
    assert sent.status_code == 201
    assert sent.get_json()["notifications"][0]["user_id"] == "dora"
    assert client.post("/debug/notify").status_code == 401


@pytest.mark.parametrize("user_id", ["", "x" * 129, "tab\there"])
def test_mint_rejects_bad_user_ids(client, user_id):
    response = client.post("/debug/token", json={"user_id": user_id})
    if user_id == "":
        assert response.status_code == 200  # falls back to the default test user
        return
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"


def test_production_has_no_minting_or_test_button(prod_client):
    html = prod_client.get("/debug").get_data(as_text=True)
    assert 'id="mint"' not in html and 'id="notify"' not in html
    assert 'data-development="0"' in html
    assert_not_found(prod_client.post("/debug/token", json={"user_id": "x"}))
    assert_not_found(prod_client.post("/debug/notify"))


def test_production_page_has_the_push_panel_and_a_standalone_manifest(prod_client):
    html = prod_client.get("/debug").get_data(as_text=True)
    # Push is a user's own API, not a development helper: the panel stays.
    for button in ("push-enable", "push-disable", "push-test"):
        assert f'id="{button}"' in html
    assert '<link rel="manifest" href="/static/debug.webmanifest">' in html
    manifest = prod_client.get("/static/debug.webmanifest")
    assert manifest.mimetype == "application/manifest+json"
    # Added to an iPhone's Home Screen, the page opens standalone: there iOS pushes.
    fields = manifest.get_json(force=True)
    assert fields["display"] == "standalone" and fields["start_url"] == "/debug"


def test_page_says_so_without_the_notification_client_build(tmp_path, monkeypatch):
    """static/notifications.js is the client package's build output, not committed: a
    server that did not build client/ says how to, and keeps Connect and push off."""
    from routes import debug

    monkeypatch.setattr(debug, "NOTIFICATION_CLIENT", tmp_path / "missing.js")
    html = build_app(tmp_path).test_client().get("/debug").get_data(as_text=True)
    assert 'id="no-notification-client"' in html
    assert "npm ci &amp;&amp; npm run build</code> in <code>client/</code>" in html
    for button in ("connect", "push-enable", "push-disable"):
        assert re.search(rf'<button id="{button}" type="button" disabled>', html), button

    built = tmp_path / "notifications.js"
    built.write_text("export class NotificationClient {}\n")
    monkeypatch.setattr(debug, "NOTIFICATION_CLIENT", built)
    html = build_app(tmp_path).test_client().get("/debug").get_data(as_text=True)
    assert 'id="no-notification-client"' not in html
    assert re.search(r'<button id="connect" type="button" >', html)


def test_service_worker_is_served_from_the_servers_own_origin(client):
    require_build()  # the client package's build copies it to static/
    response = client.get("/static/notifications-sw.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["Content-Type"]
    assert b'addEventListener("push"' in response.data


@pytest.mark.parametrize("path", ["/debug", "/debug/socket.io.min.js", "/debug/origin"])
def test_debug_page_off(tmp_path, path):
    client = build_app(tmp_path, DEBUG_PAGE="0").test_client()
    assert_not_found(client.get(path))


@pytest.mark.parametrize("body", ["[" * 5000, "[1]", '"x"', "NaN"])
def test_mint_token_refuses_bodies_that_are_not_an_object(client, body):
    response = client.post("/debug/token", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in ("invalid_json", "validation_error")
