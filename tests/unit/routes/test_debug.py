"""GET /debug and its helper routes, through the Flask test client. The page itself
is driven in real browsers by tests/browser/test_debug_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from tests.support.app import API_KEY, SECRET, build_app


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


def without_node_modules(tmp_path, monkeypatch) -> None:
    """The server as a deployment without npm has it: no node_modules/socket.io-client."""
    from routes import debug

    monkeypatch.setattr(debug, "CLIENT_DIST", tmp_path / "missing")


def test_without_npm_the_page_loads_socketio_client_from_jsdelivr_by_its_hash(
        tmp_path, monkeypatch):
    """No node_modules and no SOCKETIO_CLIENT_URL: the pinned version from jsDelivr,
    which the browser runs only if its SHA-384 is the one the page names; the page's
    CSP lets in that one script and nothing else from there."""
    from routes.debug import CDN_CLIENT_INTEGRITY, CDN_CLIENT_URL

    without_node_modules(tmp_path, monkeypatch)
    client = build_app(tmp_path).test_client()
    response = client.get("/debug")
    html = response.get_data(as_text=True)
    assert CDN_CLIENT_URL == ("https://cdn.jsdelivr.net/npm/socket.io-client@4.8.1/dist/"
                              "socket.io.min.js")
    [tag] = re.findall(r"<script [^>]*cdn\.jsdelivr\.net[^>]*>", html)
    assert f'src="{CDN_CLIENT_URL}"' in tag
    assert f'integrity="{CDN_CLIENT_INTEGRITY}"' in tag and 'crossorigin="anonymous"' in tag
    policy = response.headers["Content-Security-Policy"]
    script_src = next(d for d in policy.split("; ") if d.startswith("script-src "))
    assert script_src == f"script-src 'self' {CDN_CLIENT_URL}"
    # The rest of the server's policy stays as it is.
    default_policy = client.get("/healthz").headers["Content-Security-Policy"]
    assert policy.replace(f" {CDN_CLIENT_URL}", "") == default_policy
    assert_not_found(client.get("/debug/socket.io.min.js"))


def test_the_pinned_integrity_is_the_sha384_of_socketio_client_4_8_1():
    """CDN_CLIENT_INTEGRITY, computed once from npm's file (jsDelivr serves the same
    bytes), is that file's SHA-384."""
    from routes.debug import CDN_CLIENT_INTEGRITY, CLIENT_DIST

    installed = CLIENT_DIST.parent / "package.json"
    if not installed.is_file():
        pytest.skip("socket.io-client is not in node_modules (run npm ci)")
    assert json.loads(installed.read_text())["version"] == "4.8.1"
    digest = hashlib.sha384((CLIENT_DIST / "socket.io.min.js").read_bytes()).digest()
    assert CDN_CLIENT_INTEGRITY == "sha384-" + base64.b64encode(digest).decode()


def test_npm_copy_is_preferred_and_needs_no_integrity(client):
    html = client.get("/debug").get_data(as_text=True)
    assert '<script src="/debug/socket.io.min.js"></script>' in html
    assert "cdn.jsdelivr.net" not in html and "integrity=" not in html


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


def test_the_committed_notification_client_is_served_and_nothing_is_disabled(client):
    """static/notifications.js is committed: every server has it, so the page's
    buttons start enabled (debug.js still says so if it fails to load)."""
    built = client.get("/static/notifications.js")
    assert built.status_code == 200 and b"export class NotificationClient" in built.data
    html = client.get("/debug").get_data(as_text=True)
    assert 'id="no-notification-client"' not in html and 'id="no-client"' not in html
    for button in ("connect", "push-enable", "push-disable", "prefs-load"):
        assert f'<button id="{button}" type="button">' in html, button


def test_production_page_points_to_sign_in_links(prod_client):
    html = prod_client.get("/debug").get_data(as_text=True)
    assert '<p id="sign-in"' in html and "POST /debug/links" in html


def test_service_worker_is_served_from_the_servers_own_origin(client):
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
