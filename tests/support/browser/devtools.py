"""Chromium's DevTools protocol for the push tests.

chromedriver runs a DevTools command on the page for us (``goog/cdp/execute``) but
keeps the events it causes to itself. The one fact the tests need from an event is a
service worker registration's id, which ``ServiceWorker.deliverPushMessage`` takes and
only ``ServiceWorker.workerRegistrationUpdated`` tells. So ``registration_id`` opens a
DevTools WebSocket of its own to the same page, on the loopback port chromedriver
reports (``goog:chromeOptions.debuggerAddress``), and reads it there; the commands go
through chromedriver.
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests
import websocket

from tests.support.browser.webdriver import Browser


def cdp(browser: Browser, command: str, **params: Any) -> Any:
    """One DevTools command on the current page, through chromedriver."""
    return browser.command("POST", "/goog/cdp/execute", {"cmd": command, "params": params})


def _page_socket(browser: Browser, page_url: str) -> websocket.WebSocket:
    address = browser.capabilities["goog:chromeOptions"]["debuggerAddress"]
    host = "127.0.0.1:" + address.rsplit(":", 1)[1]  # it listens on IPv4 loopback
    targets = requests.get(f"http://{host}/json/list", timeout=5).json()
    found = [t for t in targets if t.get("type") == "page" and t.get("url") == page_url]
    assert found, f"no DevTools target for {page_url}: {[t.get('url') for t in targets]}"
    # No Origin header: Chromium refuses DevTools sockets from web origins.
    return websocket.create_connection(found[0]["webSocketDebuggerUrl"], timeout=5,
                                       suppress_origin=True)


def registration_id(browser: Browser, page_url: str, scope: str, timeout: float = 10) -> str:
    """The id of the live service worker registration for ``scope``, as Chromium
    reports it to a DevTools client that enables the ServiceWorker domain."""
    sock = _page_socket(browser, page_url)
    try:
        sock.send(json.dumps({"id": 1, "method": "ServiceWorker.enable"}))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                message = json.loads(sock.recv())
            except websocket.WebSocketTimeoutException:
                break
            if message.get("method") != "ServiceWorker.workerRegistrationUpdated":
                continue
            for registration in message["params"]["registrations"]:
                if registration["scopeURL"] == scope and not registration["isDeleted"]:
                    return registration["registrationId"]
        raise AssertionError(f"DevTools reported no registration for {scope} in {timeout}s")
    finally:
        sock.close()
