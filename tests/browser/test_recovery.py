"""Suspension and recovery, as iOS does it to a tab: the page is cut off (the server
dies and comes back, or the page is closed), notifications are sent meanwhile, and
the page comes back. The reference client (the client package, client/) must then
deliver every missed notification exactly once, in order, through its last_id.
Also its visibilitychange handling: becoming visible reconnects at once."""

from __future__ import annotations

import time

import pytest

from tests.support.browser.helpers import REPORT, events, new_user, open_page, wait_event

pytestmark = [pytest.mark.browser, pytest.mark.server]

# Short back-off so the tests do not wait out socket.io-client's default delays.
QUICK = {"reconnectionDelay": 200, "reconnectionDelayMax": 1000}


def start_reference(page, server, user, storage_key, socket_options=None):
    page.run("window.harness.token = arguments[0];", server.token(user))
    page.run("window.harness.reference(arguments[0], arguments[1]);", server.url,
             {"storageKey": storage_key, "socketOptions": socket_options or QUICK})
    wait_event(page, "client:sync_complete")


def delivered(page) -> list[int]:
    return [e["data"]["id"] for e in events(page, "client:notification")]


def stored_last_id(page, key: str) -> int | None:
    value = page.run("return localStorage.getItem(arguments[0]);", key)
    return int(value) if value is not None else None


def test_closed_page_gets_what_it_missed_once_in_order(page, server, page_origin):
    user = new_user(page, "closed")
    key = f"last_id:{user}"
    start_reference(page, server, user, key)
    first = server.notify(user, "before")
    wait_event(page, "client:notification", match={"id": first})
    assert stored_last_id(page, key) == first

    page.get("about:blank")  # the tab is gone: no socket, no script
    missed = [server.notify(user, f"missed {i}") for i in range(3)]

    open_page(page, page_origin)
    start_reference(page, server, user, key)
    sync = events(page, "client:sync_complete")[0]["data"]
    assert sync["replayed"] == 3 and sync["has_more"] is False
    live = server.notify(user, "after")
    wait_event(page, "client:notification", match={"id": live})
    assert delivered(page) == [*missed, live]
    assert stored_last_id(page, key) == live


def test_server_restart_replays_what_was_sent_while_down(page, server):
    user = new_user(page, "restart")
    key = f"last_id:{user}"
    start_reference(page, server, user, key)
    first = server.notify(user, "before")
    wait_event(page, "client:notification", match={"id": first})
    transport_before = page.run("return window.harness.client.transport;")

    server.crash()
    wait_event(page, "client:state", match={"state": "disconnected"})
    missed = [server.notify_offline(user, f"missed {i}") for i in range(3)]
    # The app's session renewed its token meanwhile; the reconnect must use it.
    page.run("window.harness.token = arguments[0];", server.token(user, ttl=7200))
    down_at = time.monotonic()
    server.restart()

    wait_event(page, "client:sync_complete", count=2, timeout=30)
    back_after = time.monotonic() - down_at
    live = server.notify(user, "after")
    wait_event(page, "client:notification", match={"id": live})
    assert delivered(page) == [first, *missed, live]
    assert events(page, "client:sync_complete")[1]["data"]["replayed"] == 3
    assert len(page.run("return window.harness.tokenRequests;")) >= 2
    REPORT.append(f"{page.engine.name} restart: {transport_before} before, back "
                  f"{back_after:.1f}s after the restart began, 3 missed replayed once")


def test_becoming_visible_reconnects_at_once(page, server):
    user = new_user(page, "visible")
    # A back-off of 30 s: without the visibilitychange handler, nothing would
    # reconnect within this test's waits.
    slow = {"reconnectionDelay": 30000, "reconnectionDelayMax": 30000,
            "randomizationFactor": 0}
    start_reference(page, server, user, f"last_id:{user}", slow)
    page.run("window.harness.setVisibility('visible');")  # visible and connected: no-op
    time.sleep(0.3)
    assert len(events(page, "client:auth_success")) == 1

    page.run("window.harness.setVisibility('hidden');")
    server.crash()
    wait_event(page, "client:state", match={"state": "disconnected"})
    server.restart()
    time.sleep(1.5)
    assert page.run("return window.harness.client.connected;") is False

    shown_at = time.monotonic()
    page.run("window.harness.setVisibility('visible');")
    wait_event(page, "client:auth_success", count=2, timeout=10)
    took = time.monotonic() - shown_at
    assert took < 5, f"reconnected only after {took:.1f}s"
    REPORT.append(f"{page.engine.name} visibilitychange: reconnected {took:.2f}s after "
                  "becoming visible (back-off was 30 s)")


def test_token_expiry_mid_session_renews_through_the_app(page, server):
    user = new_user(page, "expiry")
    start_reference(page, server, user, f"last_id:{user}")
    page.run("window.harness.token = arguments[0];", server.token(user, ttl=3))
    # Reconnect with the short-lived token, then let the app hold a fresh one.
    page.run("window.harness.client.socket.disconnect(); window.harness.client.connect();")
    wait_event(page, "client:auth_success", count=2)
    page.run("window.harness.token = arguments[0];", server.token(user))

    wait_event(page, "client:state", match={"state": "disconnected",
                                            "reason": "io server disconnect"}, timeout=15)
    wait_event(page, "client:auth_success", count=3, timeout=10)
    requests_made = page.run("return window.harness.tokenRequests;")
    assert requests_made[-1] == {"expired": True}
    assert page.run("return window.harness.client.connected;") is True


def test_expired_token_at_connect_is_renewed_once(page, server):
    user = new_user(page, "stale")
    page.run("window.harness.tokenQueue = [arguments[0]];", server.token(user, ttl=-120))
    start_reference(page, server, user, f"last_id:{user}")
    errors = [e["data"]["code"] for e in events(page, "client:error")]
    assert errors == ["token_expired"]
    assert len(events(page, "client:auth_success")) == 1
    assert page.run("return window.harness.tokenRequests;") == [{"expired": False},
                                                                  {"expired": True}]


def test_more_than_one_replay_is_paged_with_sync(page, server, page_origin):
    user = new_user(page, "paged")
    key = f"last_id:{user}"
    start_reference(page, server, user, key)
    first = server.notify(user, "before")
    wait_event(page, "client:notification", match={"id": first})

    page.get("about:blank")
    missed = [server.notify(user, f"missed {i}") for i in range(105)]  # replay caps at 100

    open_page(page, page_origin)
    start_reference(page, server, user, key)
    assert events(page, "client:sync_complete")[0]["data"]["has_more"] is True
    wait_event(page, "client:notification", count=105, timeout=20)
    live = server.notify(user, "after")
    wait_event(page, "client:notification", match={"id": live})
    assert delivered(page) == [*missed, live]
    assert stored_last_id(page, key) == live
