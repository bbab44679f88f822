"""Web Push in real browsers.

Chromium: the service worker the product serves (/static/notifications-sw.js, the
client package's build), registered from the product server's own origin, shows a
notification for a push that DevTools delivers to it
(``ServiceWorker.deliverPushMessage`` through chromedriver). The push is what the
server really sent: web-push-testing received it and decrypted it. A repeated id
replaces its notification; an unreadable push still shows one. The reference
client's enablePush(), on the front end's own origin, registers the front end's copy
of the worker, subscribes with the server's key and stores the subscription for the
token's user (renewing an expired token once); disablePush() removes it. The
browser's push service is the one stand-in: Google's is out of reach, so PushManager
hands out a web-push-testing subscription. enablePush() also says when permission is
denied, when the server has push off, and when the front end does not serve the
worker.

WebKit (WebKitGTK's MiniBrowser, the engine of Safari): it has service workers and
Notification but no PushManager, so enablePush() answers "unsupported"; presented as
iPhone or iPad Safari in a tab, "ios_not_standalone"; as a Home Screen app of an iOS
older than 16.4, "unsupported" with that reason.

Both: /debug's push panel shows the state and sends a test push to the user's
subscriptions (a web-push-testing one here), listing each answer.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.support.browser.devtools import cdp, registration_id
from tests.support.browser.helpers import (  # noqa: F401 (the production_server fixture)
    NotifyServer,
    new_user,
    production_server_fixture,
)
from tests.support.browser.webdriver import Browser
from tests.support.push_service import (  # noqa: F401 (the push_service fixture)
    PushService,
    VapidKeys,
    browser_json,
    push_service_fixture,
)

pytestmark = [pytest.mark.browser, pytest.mark.server]

chromium = pytest.mark.parametrize("browser", ["chromium"], indirect=True)
webkit = pytest.mark.parametrize("browser", ["webkit"], indirect=True)

WORKER = "/static/notifications-sw.js"  # on the product server
FRONT_END_WORKER = "/notifications-sw.js"  # the stand-in front end's copy
IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
IPAD_SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Version/17.5 Safari/605.1.15")


@pytest.fixture(scope="module")
def push_server(tmp_path_factory, page_origin, push_service) -> Iterator[NotifyServer]:
    """Production, with Web Push on and web-push-testing as its one push service."""
    instance = NotifyServer(tmp_path_factory.mktemp("push-server"), page_origin,
                            VAPID_PRIVATE_KEY=VapidKeys.generate().private,
                            VAPID_SUBJECT="mailto:push-tests@example.com",
                            WEB_PUSH_ENDPOINT_ORIGINS=push_service.origin)
    yield instance
    instance.stop()


def subscribe_user(server: NotifyServer, service: PushService, user: str) -> dict[str, Any]:
    """A web-push-testing subscription, stored for ``user`` as a browser would."""
    key = requests.get(server.url + "/api/push/config", timeout=10).json()["vapid_public_key"]
    subscription = service.subscribe(key)
    response = requests.post(server.url + "/api/push/subscriptions",
                             json=browser_json(subscription), timeout=10,
                             headers={"Authorization": f"Bearer {server.token(user)}"})
    assert response.status_code == 201, response.text
    return subscription


# -- Chromium: the service worker ---------------------------------------------------


@dataclass
class Worker:
    """The service worker registered on the product server's origin, in Chromium."""

    browser: Browser
    origin: str
    scope: str
    registration_id: str

    def push(self, data: str) -> None:
        cdp(self.browser, "ServiceWorker.deliverPushMessage", origin=self.origin,
            registrationId=self.registration_id, data=data)

    def notifications(self) -> list[dict[str, Any]]:
        return self.browser.run(
            "return navigator.serviceWorker.getRegistration(arguments[0])"
            ".then((r) => r.getNotifications())"
            ".then((all) => all.map((n) => ({title: n.title, body: n.body, tag: n.tag,"
            " data: n.data})));", self.scope)

    def wait_notifications(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(shown := self.notifications()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} notification(s) expected; shown: {shown}")
            time.sleep(0.1)
        return shown


@pytest.fixture
def worker(browser, push_server) -> Worker:
    """/debug on the product server, notifications allowed there, its service worker
    registered and active, and no notification showing."""
    page_url = push_server.url + "/debug"
    browser.get(page_url)
    cdp(browser, "Browser.grantPermissions", origin=push_server.url,
        permissions=["notifications"])
    scope = browser.run("""
        return navigator.serviceWorker.register(arguments[0]).then((r) =>
          new Promise((resolve) => {
            const check = () => (r.active ? resolve(r.scope) : setTimeout(check, 50));
            check();
          }));""", WORKER)
    assert scope == push_server.url + "/static/"
    cdp(browser, "ServiceWorker.enable")  # deliverPushMessage needs the domain on
    found = Worker(browser, push_server.url, scope, registration_id(browser, page_url, scope))
    browser.run("return navigator.serviceWorker.getRegistration(arguments[0])"
                ".then((r) => r.getNotifications()).then((all) => all.forEach((n) => n.close()));",
                scope)
    assert found.notifications() == []
    return found


def pushed_by_server(server: NotifyServer, service: PushService, user: str, **fields) -> str:
    """What the server pushes for a new notification, decrypted by web-push-testing."""
    subscription = subscribe_user(server, service, user)
    server.notify(user, "Bob replied", push="always", **fields)
    return service.wait_for_messages(subscription["clientHash"])[0]


@chromium
def test_the_service_worker_shows_the_servers_push(worker, push_server, push_service):
    user = new_user(worker.browser, "sw")
    data = pushed_by_server(push_server, push_service, user, body="Nice post",
                            data={"url": "/posts/7"})
    payload = json.loads(data)
    worker.push(data)
    [shown] = worker.wait_notifications(1)
    assert shown == {"title": "Bob replied", "body": "Nice post", "tag": str(payload["id"]),
                     "data": payload}


@chromium
def test_a_repeated_id_replaces_its_notification(worker):
    first = {"id": 901, "type": "t", "title": "First", "body": "one", "data": {}}
    other = {"id": 902, "type": "t", "title": "Other", "body": "two", "data": {}}
    worker.push(json.dumps(first))
    worker.push(json.dumps(other))
    worker.wait_notifications(2)
    worker.push(json.dumps({**first, "title": "First, again"}))
    deadline = time.monotonic() + 10
    while "First, again" not in [n["title"] for n in worker.notifications()]:
        assert time.monotonic() < deadline, worker.notifications()
        time.sleep(0.1)
    shown = sorted(worker.notifications(), key=lambda n: n["tag"])
    assert [(n["tag"], n["title"]) for n in shown] == [("901", "First, again"), ("902", "Other")]


@chromium
def test_an_unreadable_push_still_shows_a_notification(worker):
    worker.push("not json {")
    [shown] = worker.wait_notifications(1)
    assert shown["title"] == "New notification" and shown["tag"] == ""
    assert shown["body"] == "Open the app to see it."


# -- the reference client's enablePush(): why push cannot work -----------------------


def enable_push(page: Browser, server: NotifyServer, user: str,
                worker_url: str = FRONT_END_WORKER) -> dict[str, Any]:
    page.run("window.harness.token = arguments[0];", server.token(user))
    page.run("window.harness.pushClient(arguments[0], {serviceWorkerUrl: arguments[1]});",
             server.url, worker_url)
    return page.run("return window.harness.push.enablePush();")


def registrations(page: Browser) -> list[str]:
    return page.run("return navigator.serviceWorker.getRegistrations()"
                    ".then((all) => all.map((r) => r.scope));")


# The browser's own push service (Google's FCM) is out of reach here, so Chromium's
# PushManager hands out a web-push-testing subscription instead. The rest is real:
# the permission, the worker's registration, the key the client passes, its calls to
# the server with the user's token (cross-origin), and the server's checks.
FAKE_PUSH_SERVICE = """
    const [subscription] = arguments;
    let current = null;
    window.subscribeCalls = [];
    PushManager.prototype.getSubscription = async () => current;
    PushManager.prototype.subscribe = async (options) => {
      const key = new Uint8Array(options.applicationServerKey);
      window.subscribeCalls.push({userVisibleOnly: options.userVisibleOnly,
                                  key: Array.from(key)});
      current = {
        endpoint: subscription.endpoint,
        options: {applicationServerKey: key.buffer},
        toJSON: () => subscription,
        unsubscribe: async () => { current = null; return true; },
      };
      return current;
    };
"""


def server_subscriptions(server: NotifyServer, user: str) -> list[dict[str, Any]]:
    response = requests.get(server.url + "/api/push/subscriptions", timeout=10,
                            headers={"Authorization": f"Bearer {server.token(user)}"})
    assert response.status_code == 200, response.text
    return response.json()["subscriptions"]


@chromium
def test_enable_push_subscribes_the_user_and_disable_push_removes_it(
        page, page_origin, push_server, push_service):
    user = new_user(page, "enable")
    key = requests.get(push_server.url + "/api/push/config", timeout=10).json()[
        "vapid_public_key"]
    subscription = push_service.subscribe(key)
    cdp(page, "Browser.grantPermissions", origin=page_origin, permissions=["notifications"])
    try:
        page.run(FAKE_PUSH_SERVICE, browser_json(subscription))
        # The app's first token has expired: the client asks for a fresh one, once.
        page.run("window.harness.tokenQueue = [arguments[0]];", push_server.token(user, -120))
        result = enable_push(page, push_server, user)
        assert result == {"ok": True, "id": result["id"]} and isinstance(result["id"], int)
        assert page.run("return window.harness.tokenRequests;") == [
            {"expired": False}, {"expired": True}]
        assert page.run("return window.subscribeCalls;") == [
            {"userVisibleOnly": True, "key": list(base64.urlsafe_b64decode(key + "=="))}]
        assert registrations(page) == [page_origin + "/"]  # the front end's own worker
        [stored] = server_subscriptions(push_server, user)
        assert stored["id"] == result["id"] and stored["origin"] == push_service.origin

        status = page.run("return window.harness.push.pushStatus();")
        assert status == {"supported": True, "reason": None, "message": None,
                          "permission": "granted", "serverEnabled": True,
                          "subscribed": True, "endpointOrigin": push_service.origin}
        # The server pushes to what the client stored.
        push_server.notify(user, "to the subscription", push="always")
        [message] = push_service.wait_for_messages(subscription["clientHash"])
        assert json.loads(message)["title"] == "to the subscription"
        # Again, as at every start once permitted: the same subscription, kept.
        assert page.run("return window.harness.push.enablePush();") == result
        assert len(page.run("return window.subscribeCalls;")) == 1

        assert page.run("return window.harness.push.disablePush();") == {
            "ok": True, "removed": True, "serverError": None}
        assert server_subscriptions(push_server, user) == []
        assert page.run("return window.harness.push.pushStatus();")["subscribed"] is False
    finally:
        cdp(page, "Browser.resetPermissions")
        page.run("return navigator.serviceWorker.getRegistrations()"
                 ".then((all) => Promise.all(all.map((r) => r.unregister())));")


@chromium
def test_chromium_reports_permission_denied(page, page_origin, push_server):
    cdp(page, "Browser.setPermission", origin=page_origin,
        permission={"name": "notifications"}, setting="denied")
    try:
        result = enable_push(page, push_server, new_user(page, "denied"))
    finally:
        cdp(page, "Browser.resetPermissions")
    assert result["ok"] is False and result["reason"] == "permission_denied"
    assert "blocked" in result["message"]
    assert registrations(page) == []  # nothing was registered for nothing


@chromium
def test_chromium_reports_server_disabled(page, page_origin, production_server):
    cdp(page, "Browser.grantPermissions", origin=page_origin, permissions=["notifications"])
    try:
        result = enable_push(page, production_server, new_user(page, "off"))
    finally:
        cdp(page, "Browser.resetPermissions")
    assert result == {"ok": False, "reason": "server_disabled", "message": (
        "The notification server has Web Push turned off (no VAPID_PRIVATE_KEY).")}
    assert registrations(page) == []


@chromium
def test_chromium_reports_a_worker_the_front_end_does_not_serve(page, page_origin,
                                                                push_server):
    cdp(page, "Browser.grantPermissions", origin=page_origin, permissions=["notifications"])
    try:
        result = enable_push(page, push_server, new_user(page, "no-worker"), "/missing-sw.js")
    finally:
        cdp(page, "Browser.resetPermissions")
    assert result["ok"] is False and result["reason"] == "subscribe_failed"
    assert result["code"] == "service_worker_failed"
    assert f"{page_origin}/missing-sw.js" in result["message"]
    assert registrations(page) == []


@webkit
def test_webkitgtk_has_no_push_manager(page, push_server):
    assert page.run("return [typeof navigator.serviceWorker, typeof Notification,"
                    " typeof PushManager];") == ["object", "function", "undefined"]
    result = enable_push(page, push_server, new_user(page, "webkit"))
    assert result["ok"] is False and result["reason"] == "unsupported"
    assert "PushManager" in result["message"]
    # Nothing was asked or registered: the answer came before any of it.
    assert page.run("return Notification.permission;") == "default"
    assert registrations(page) == []


def present_as(page: Browser, agent: str, touch_points: int, standalone: bool) -> None:
    """What WebKit tells a page on an iPhone or iPad: its user agent, touch screen, and
    Safari's navigator.standalone (false in a tab, true from the Home Screen)."""
    page.run("""
        const [agent, touch, standalone] = arguments;
        Object.defineProperty(navigator, "userAgent", {configurable: true, get: () => agent});
        Object.defineProperty(navigator, "maxTouchPoints", {configurable: true, get: () => touch});
        Object.defineProperty(navigator, "standalone", {configurable: true,
                                                        get: () => standalone});
    """, agent, touch_points, standalone)


@webkit
@pytest.mark.parametrize("agent", [IPHONE_SAFARI, IPAD_SAFARI], ids=["iphone", "ipad"])
def test_ios_safari_in_a_tab_is_told_to_open_from_the_home_screen(page, push_server, agent):
    present_as(page, agent, touch_points=5, standalone=False)
    result = enable_push(page, push_server, new_user(page, "ios-tab"))
    assert result["ok"] is False and result["reason"] == "ios_not_standalone"
    assert "Add to Home Screen" in result["message"]
    assert registrations(page) == []


@webkit
def test_a_home_screen_app_without_push_manager_needs_a_newer_ios(page, push_server):
    present_as(page, IPHONE_SAFARI, touch_points=5, standalone=True)
    result = enable_push(page, push_server, new_user(page, "old-ios"))
    assert result == {"ok": False, "reason": "unsupported", "message": (
        "Web Push on iPhone and iPad needs iOS/iPadOS 16.4 or later.")}


# -- /debug's push panel -------------------------------------------------------------


def shown(browser: Browser, css: str, expected: str, timeout: float = 15) -> str:
    browser.wait_for("(document.querySelector(arguments[0]) || {}).textContent"
                     "?.includes(arguments[1])", css, expected, timeout=timeout,
                     what=f"{css} to show {expected!r}")
    return browser.text(css)


def test_debug_push_panel_shows_state_and_sends_a_test_push(browser, push_server,
                                                             push_service):
    user = new_user(browser, "panel")
    subscription = subscribe_user(push_server, push_service, user)
    if browser.engine.name == "chromium":
        cdp(browser, "Browser.grantPermissions", origin=push_server.url,
            permissions=["notifications"])
    browser.get(push_server.url + "/debug")
    browser.wait_for("document.body.dataset.ready === '1'", what="debug.js to run")
    shown(browser, "#push-server", "push enabled")
    if browser.engine.name == "webkit":
        shown(browser, "#push-supported", "no (unsupported)")
        browser.click("#push-enable")
        shown(browser, "#push-result", "unsupported: This browser cannot receive Web Push")
    else:
        shown(browser, "#push-supported", "can receive Web Push")
        shown(browser, "#push-permission", "granted")
        shown(browser, "#push-subscribed", "none here")

    browser.type("#token", push_server.token(user))
    browser.click("#push-test")
    line = shown(browser, "#push-results li[data-outcome='sent']", "push service answered 201")
    assert push_service.origin in line
    shown(browser, "#push-result", "sent to 1 of 1 subscription(s)")
    [message] = push_service.wait_for_messages(subscription["clientHash"])
    assert json.loads(message)["type"] == "push_test"

