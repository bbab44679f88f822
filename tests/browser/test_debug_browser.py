"""GET /debug in WebKit and Chromium, on a phone-sized window: it loads under the
server's Content-Security-Policy, reports the server and the origin check, explains
a refused token in plain words, mints a token, connects, shows the transport and its
upgrade, the ping round trip and a test notification; its preferences panel loads
and saves a user's preferences. On a production server, a one-time link a producer
minted signs the page in (once) and it connects. A screenshot of each engine goes to
test-artifacts/. In Chromium, a page whose client package or socket.io-client does
not load says so and keeps the server facts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.browser.devtools import cdp
from tests.support.browser.helpers import (  # noqa: F401 (the production_server fixture)
    ARTIFACTS,
    REPORT,
    NotifyServer,
    new_user,
    production_server_fixture,
)

pytestmark = [pytest.mark.browser, pytest.mark.server]

PHONE = (430, 2000)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory, page_origin) -> Iterator[NotifyServer]:
    """Development mode, where the page can mint tokens and send a test notification."""
    instance = NotifyServer(tmp_path_factory.mktemp("debug-server"), page_origin,
                            APP_ENV="development")
    yield instance
    instance.stop()


def open_debug(browser, url: str) -> None:
    """``url`` (/debug, or a link to it) loaded, and debug.js run."""
    browser.get(url)
    browser.wait_for("document.body.dataset.ready === '1'", what="debug.js to run")


def mint_on_page(browser, label: str) -> str:
    """A new user, whose token the page's mint form put in the token field."""
    user = new_user(browser, label)
    browser.type("#mint-user", user)
    browser.click("#mint")
    browser.wait_for("document.getElementById('token').value.split('.').length === 3",
                     what="a minted token")
    return user


def shown(browser, css: str, expected: str, timeout: float = 15) -> str:
    browser.wait_for("(document.querySelector(arguments[0]) || {}).textContent"
                     "?.includes(arguments[1])", css, expected, timeout=timeout,
                     what=f"{css} to show {expected!r}")
    return browser.text(css)


def test_debug_page_diagnoses_a_connection(browser, dev_server):
    browser.set_window(*PHONE)
    try:
        open_debug(browser, dev_server.url + "/debug")
        shown(browser, "#fact-async_mode", "eventlet")
        shown(browser, "#origin-line", "is allowed to connect")

        browser.type("#origin-input", "https://evil.example")
        browser.click("#origin-form button")
        shown(browser, "#origin-other", "https://evil.example is NOT allowed")

        browser.type("#token", "not-a-token")
        browser.click("#connect")
        shown(browser, "#error", "token_invalid: The token was not accepted")

        user = mint_on_page(browser, "debug")
        browser.click("#connect")
        shown(browser, "#state", "connected")
        shown(browser, "#user", user)
        transport = shown(browser, "#transport", "websocket (upgraded from polling)")

        browser.click("#notify")
        shown(browser, "#events", '"title": "Test notification"')
        rtt = shown(browser, "#rtt", " ms")
        browser.run("window.scrollTo(0, 0);")
        path = browser.screenshot(ARTIFACTS / f"debug-{browser.engine.name}.png")
        REPORT.append(f"{browser.engine.name} /debug: {transport}, ping {rtt}; "
                      f"screenshot {path.relative_to(ARTIFACTS.parent)}")
    finally:
        browser.run("document.getElementById('disconnect').click();")


def server_preferences(server: NotifyServer, user: str) -> dict:
    response = requests.get(server.url + "/api/preferences", timeout=10,
                            headers={"Authorization": f"Bearer {server.token(user)}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_debug_page_loads_and_saves_preferences(browser, dev_server):
    """The preferences panel: Load shows the user's set as JSON and in the form; Save
    sends what changed (channels.push, the time zone, one quiet window) and shows the
    server's answer; a refused time zone is explained and changes nothing; clearing
    the window removes it."""
    browser.set_window(*PHONE)
    open_debug(browser, dev_server.url + "/debug")
    assert browser.run("return document.getElementById('prefs-fields').disabled;") is True

    user = mint_on_page(browser, "prefs")
    browser.click("#prefs-load")
    shown(browser, "#prefs-result", "loaded: the defaults")
    shown(browser, "#prefs-json", '"updated_at": null')
    assert browser.run("return ['prefs-in-app', 'prefs-push'].map((id) => "
                       "document.getElementById(id).checked);") == [True, True]

    browser.click("#prefs-push")
    browser.type("#prefs-timezone", "Asia/Seoul")
    browser.type("#prefs-quiet-start", "22:00")
    browser.type("#prefs-quiet-end", "07:00")
    browser.click("#prefs-save")
    shown(browser, "#prefs-result", "saved: channels, timezone, quiet_hours")
    shown(browser, "#prefs-json", '"timezone": "Asia/Seoul"')
    saved = server_preferences(dev_server, user)
    assert saved["channels"] == {"in_app": True, "push": False}
    assert saved["timezone"] == "Asia/Seoul"
    assert saved["quiet_hours"] == [{"start": "22:00", "end": "07:00"}]
    browser.run("document.getElementById('preferences').scrollIntoView();")
    path = browser.screenshot(ARTIFACTS / f"debug-preferences-{browser.engine.name}.png")
    REPORT.append(f"{browser.engine.name} /debug preferences: saved; screenshot "
                  f"{path.relative_to(ARTIFACTS.parent)}")

    # A time zone the server does not know: its message, and nothing stored.
    browser.type("#prefs-timezone", "Mars/Olympus_Mons")
    browser.click("#prefs-save")
    shown(browser, "#prefs-result", "Saving failed: validation_error: unknown time zone")
    assert server_preferences(dev_server, user) == saved

    # Load shows what changed elsewhere; an emptied window is removed, the rest stays.
    requests.patch(dev_server.url + "/api/preferences", json={"types": {"debug": {"push": False}}},
                   headers={"Authorization": f"Bearer {dev_server.token(user)}"},
                   timeout=10).raise_for_status()
    browser.click("#prefs-load")
    shown(browser, "#prefs-json", '"debug"')
    assert browser.run("return document.getElementById('prefs-timezone').value;") == "Asia/Seoul"
    for css in ("#prefs-quiet-start", "#prefs-quiet-end"):
        browser.command("POST", f"/element/{browser.element(css)}/clear")
    browser.click("#prefs-save")
    shown(browser, "#prefs-result", "saved: quiet_hours")
    after = server_preferences(dev_server, user)
    assert after["quiet_hours"] == [] and after["timezone"] == "Asia/Seoul"
    assert after["types"] == {"debug": {"push": False}}
    assert after["channels"] == {"in_app": True, "push": False}


def test_a_one_time_link_signs_the_page_in_on_a_production_server(browser, production_server):
    """The producer mints a link for a user; opened on the phone, the page takes the
    code out of the address bar, trades it for a token, says who it signed in as, and
    connects as that user. The link works once: opened again, the page says so."""
    user = new_user(browser, "link")
    api_key = production_server.env["NOTIFY_API_KEY"]
    minted = requests.post(production_server.url + "/debug/links", json={"user_id": user},
                           headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert minted.status_code == 201, minted.text
    link = minted.json()["url"]
    assert link.startswith(production_server.url + "/debug#code=")
    browser.set_window(*PHONE)
    try:
        open_debug(browser, link)
        shown(browser, "#sign-in", f"Signed in as {user}")
        assert browser.run("return location.href;") == production_server.url + "/debug"
        assert browser.run("return document.getElementById('token').value.split('.').length;"
                           ) == 3
        assert browser.run("return document.getElementById('mint');") is None  # production

        browser.click("#connect")
        shown(browser, "#state", "connected")
        shown(browser, "#user", user)
        production_server.notify(user, "Hello from the producer")
        shown(browser, "#events", '"title": "Hello from the producer"')
        browser.run("window.scrollTo(0, 0);")
        path = browser.screenshot(ARTIFACTS / f"debug-link-{browser.engine.name}.png")
        REPORT.append(f"{browser.engine.name} /debug on production: signed in with a link; "
                      f"screenshot {path.relative_to(ARTIFACTS.parent)}")
        browser.run("document.getElementById('disconnect').click();")

        # Spent: a new load of the same link signs nobody in.
        browser.get("about:blank")
        open_debug(browser, link)
        shown(browser, "#sign-in", "This sign-in link was used already or has expired")
        assert browser.run("return document.getElementById('token').value;") == ""
        assert browser.run("return location.hash;") == ""
    finally:
        browser.run("const b = document.getElementById('disconnect'); if (b) b.click();")


@pytest.mark.parametrize("browser", ["chromium"], indirect=True)
def test_debug_page_says_so_when_socketio_client_does_not_load(browser, dev_server):
    """socket.io-client from npm, SOCKETIO_CLIENT_URL or jsDelivr: when it does not come
    (blocked here through DevTools, as an unreachable CDN would be), the page names
    the URL, keeps Connect off and still shows the server facts."""
    cdp(browser, "Network.enable")
    cdp(browser, "Network.setBlockedURLs", urls=["*/debug/socket.io.min.js"])
    try:
        open_debug(browser, dev_server.url + "/debug")
        shown(browser, "#no-client", "socket.io-client did not load from "
              f"{dev_server.url}/debug/socket.io.min.js")
        shown(browser, "#fact-async_mode", "eventlet")
        assert browser.run("return document.getElementById('connect').disabled;") is True
        assert browser.run("return document.getElementById('prefs-load').disabled;") is False
    finally:
        cdp(browser, "Network.setBlockedURLs", urls=[])
        cdp(browser, "Network.disable")


@pytest.mark.parametrize("browser", ["chromium"], indirect=True)
def test_debug_page_says_so_when_the_client_does_not_load(browser, dev_server):
    """/static/notifications.js is the client package's build (committed): when the
    page cannot load it (blocked here through DevTools), it says what is missing
    instead of dying, and the server facts still come."""
    cdp(browser, "Network.enable")
    cdp(browser, "Network.setBlockedURLs", urls=["*/static/notifications.js"])
    try:
        open_debug(browser, dev_server.url + "/debug")
        shown(browser, "#no-notification-client", "(/static/notifications.js) did not load")
        shown(browser, "#fact-async_mode", "eventlet")
        shown(browser, "#push-supported", "the notification client is not built")
        assert browser.run("return ['connect', 'push-enable', 'push-disable', 'prefs-load']"
                           ".map((id) => document.getElementById(id).disabled);") == [
            True, True, True, True]
    finally:
        cdp(browser, "Network.setBlockedURLs", urls=[])
        cdp(browser, "Network.disable")
