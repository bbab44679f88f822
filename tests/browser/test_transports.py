"""The front end's socket.io-client 4.8.1 configurations, in WebKit and Chromium, from a
page on its own origin to a production gunicorn eventlet server: each authenticates
as the token's user and receives a notification posted through the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.browser.helpers import REPORT, events, new_user, open_page, wait_event

pytestmark = [pytest.mark.browser, pytest.mark.server]


def desktop(token: str) -> dict[str, Any]:
    # The app's desktop options. The query's user_id names someone else on purpose:
    # the server must take the user from the token alone.
    return {"transports": ["websocket", "polling"], "withCredentials": True, "forceNew": True,
            "auth": {"token": token}, "query": {"token": token, "user_id": "someone-else"}}


def mobile_original(token: str) -> dict[str, Any]:
    return {"transports": ["polling", "websocket"], "upgrade": False, "forceNew": True,
            "auth": {"token": token}}


def mobile_fixed(token: str) -> dict[str, Any]:
    # The token only in a header: browsers send extraHeaders on polling requests.
    return {"transports": ["polling"], "withCredentials": False, "forceNew": True,
            "extraHeaders": {"Authorization": f"Bearer {token}"}}


def websocket_only(token: str) -> dict[str, Any]:
    return {"transports": ["websocket"], "forceNew": True, "auth": {"token": token}}


def polling_upgraded(token: str) -> dict[str, Any]:
    return {"transports": ["polling", "websocket"], "forceNew": True, "auth": {"token": token}}


# name: (options, transport that must carry the notification, whether it upgrades)
CONFIGS: dict[str, tuple[Callable[[str], dict[str, Any]], str, bool]] = {
    "a-desktop": (desktop, "websocket", False),
    "b-mobile-original": (mobile_original, "polling", False),
    "c-mobile-fixed": (mobile_fixed, "polling", False),
    "d-websocket-only": (websocket_only, "websocket", False),
    "e-polling-upgraded": (polling_upgraded, "websocket", True),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_configuration_authenticates_and_receives(page, server, config):
    make_options, carrier, upgrades = CONFIGS[config]
    user = new_user(page, config)
    page.run("window.harness.open(arguments[0], arguments[1]);", server.url,
             make_options(server.token(user)))

    welcome = wait_event(page, "auth_success")[0]
    assert welcome["data"]["user_id"] == user
    wait_event(page, "sync_complete")
    if upgrades:
        assert wait_event(page, "upgrade")[0]["data"]["name"] == "websocket"

    sent = server.notify(user, f"hello {config}")
    received = wait_event(page, "notification", match={"id": sent})
    assert [n["data"]["id"] for n in received] == [sent]
    assert received[0]["data"]["title"] == f"hello {config}"
    assert received[0]["transport"] == carrier
    if not upgrades:
        assert events(page, "upgrade") == []
    assert events(page, "connect_error") == []
    opened_on = events(page, "engine_open")[0]["transport"]
    REPORT.append(f"{page.engine.name} {config}: opened on {opened_on}, "
                  f"notification {sent} carried by {received[0]['transport']}")


@pytest.mark.parametrize("transports", [["polling", "websocket"], ["websocket"]])
def test_foreign_origin_is_refused(browser, foreign_origin, server, transports):
    open_page(browser, foreign_origin)
    user = new_user(browser, "foreign")
    try:
        browser.run("window.harness.open(arguments[0], arguments[1]);", server.url,
                    {"transports": transports, "forceNew": True, "reconnection": False,
                     "auth": {"token": server.token(user)}})
        error = wait_event(browser, "connect_error")[0]
        # The browser saw the handshake fail: a CORS-blocked poll or a refused upgrade.
        assert error["data"]["message"] in ("xhr poll error", "websocket error")
        assert events(browser, "connect") == [] and events(browser, "auth_success") == []
        REPORT.append(f"{browser.engine.name} foreign origin over {transports[0]}: "
                      f"{error['data']['message']}")
    finally:
        browser.run("window.harness.close();")


def test_expired_token_is_refused_with_its_code(page, server):
    user = new_user(page, "expired")
    page.run("window.harness.open(arguments[0], arguments[1]);", server.url,
             {"transports": ["polling", "websocket"], "forceNew": True,
              "auth": {"token": server.token(user, ttl=-120)}})
    error = wait_event(page, "connect_error")[0]["data"]
    assert error["message"] == "unauthorized"
    assert error["data"] == {"code": "token_expired"}
    assert events(page, "auth_success") == []
