"""The client package's preferences, against a real production gunicorn server.

- NotificationClient in Node: getPreferences, setPreferences (a merge patch, sent as
  application/merge-patch+json), replacePreferences (PUT), and one device's push on
  and off (setPushSubscriptionEnabled, on a subscription made through
  web-push-testing); refusals come back as NotificationRequestError.
- usePreferences() under <StrictMode>, the same scenario (client/test/
  preferences-scenario.mjs) rendered twice: by react-dom into jsdom in Node, and in
  headless Chromium on a page of its own origin, as a React app runs it: two
  components share one load, show each update's server answer, keep the preferences
  on a refusal, and follow reload(), a change of user and a sign-out.

Under CI=true missing node, npm, Chromium or a client build is a failure; elsewhere
these tests skip with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.browser.webdriver import ENGINES, Browser
from tests.support.client_package import (
    ReactPage,
    node_report,
    require_build,
    unavailable,
)
from tests.support.push_service import (
    PushService,
    VapidKeys,
    browser_json,
    push_service_fixture,  # noqa: F401  (the push_service fixture)
)
from tests.support.servers import ServerProcess, gunicorn, migrate, mint, server_env

pytestmark = [pytest.mark.slow, pytest.mark.server]

NODE_ORIGIN = "http://localhost:3000"  # what the Node runs send as their Origin
DEFAULTS = {"channels": {"in_app": True, "push": True}, "types": {}, "timezone": None,
            "quiet_hours": [], "updated_at": None}
MERGE_PATCH = "application/merge-patch+json"


@pytest.fixture(scope="module")
def page() -> Iterator[ReactPage]:
    instance = ReactPage()
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> Iterator[Browser]:
    """Headless Chromium through chromedriver (tests/support/browser/webdriver.py)."""
    engine = ENGINES["chromium"]
    if missing := engine.missing():
        unavailable(f"chromium: {missing}")
    browser = Browser(engine, tmp_path_factory.mktemp("chromium-driver"))
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def keys() -> VapidKeys:
    return VapidKeys.generate()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, page, keys, push_service) -> Iterator[ServerProcess]:
    """Production mode, push on (web-push-testing's endpoints), both pages' origins."""
    tmp = tmp_path_factory.mktemp("preferences-server")
    env = server_env(tmp, FRONTEND_URLS=f"{NODE_ORIGIN},{page.origin}",
                     VAPID_PRIVATE_KEY=keys.private, VAPID_SUBJECT="mailto:client@example.com",
                     WEB_PUSH_ENDPOINT_ORIGINS=push_service.origin)
    migrate(env)
    server = gunicorn(tmp, env).start()
    yield server
    server.stop()


def new_user(label: str) -> str:
    return f"prefs-{label}-{uuid.uuid4().hex[:8]}"


def subscribe(server: ServerProcess, push_service: PushService, keys: VapidKeys,
              user: str) -> int:
    """A device of ``user``'s, as enablePush() stores it: its subscription id."""
    subscription = browser_json(push_service.subscribe(keys.public))
    response = requests.post(server.url + "/api/push/subscriptions", json=subscription,
                             headers={"Authorization": f"Bearer {mint(user)}"}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def server_preferences(server: ServerProcess, user: str) -> dict[str, Any]:
    response = requests.get(server.url + "/api/preferences", timeout=10,
                            headers={"Authorization": f"Bearer {mint(user)}"})
    assert response.status_code == 200, response.text
    return response.json()


def check_hook_scenario(report: dict[str, Any], env: str) -> None:
    """What preferences-scenario.mjs saw, wherever it ran (``env`` names it)."""
    assert "error" not in report, (env, report)
    steps = report["steps"]

    # StrictMode mounted both components and the provider twice: one GET in all.
    loaded = steps["loaded"]
    assert loaded["first_render"] == {"preferences": None, "loading": True, "error": None}
    assert loaded["settings"] == {"preferences": DEFAULTS, "loading": False, "error": None}
    assert loaded["same_in_badge"] is True
    assert loaded["requests"] == [{"method": "GET", "path": "/api/preferences",
                                   "content_type": None}], env

    # update(): one PATCH as a merge patch; both components show the server's answer.
    updated = steps["updated"]
    answer = updated["answer"]
    assert answer["channels"] == {"in_app": True, "push": False}
    assert answer["timezone"] == "Asia/Seoul"
    assert answer["quiet_hours"] == [{"start": "22:00", "end": "07:00"}]
    assert answer["updated_at"] is not None
    assert updated["settings"] == {"preferences": answer, "loading": False, "error": None}
    assert updated["badge_text"] == "push off"
    assert updated["on_server"] == answer
    assert updated["requests"] == [{"method": "PATCH", "path": "/api/preferences",
                                    "content_type": MERGE_PATCH}]

    # A refused update rejects with the server's error; the preferences stay.
    refused = steps["refused"]
    assert refused["rejection"]["name"] == "NotificationRequestError"
    assert (refused["rejection"]["code"], refused["rejection"]["status"]) == (
        "validation_error", 400)
    assert "Mars/Olympus_Mons" in refused["rejection"]["message"]
    assert refused["settings"]["error"] == refused["rejection"]
    assert refused["settings"]["preferences"] == answer and refused["unchanged"] is True

    # reload() shows another device's change, and clears the error.
    reloaded = steps["reloaded"]
    assert reloaded["other_device_status"] == 200
    assert reloaded["settings"]["preferences"]["types"] == {"comment": {"push": False}}
    assert reloaded["settings"]["preferences"]["channels"] == {"in_app": True, "push": False}
    assert reloaded["settings"]["error"] is None and reloaded["badge_same"] is True

    # null deletes the rule and the time zone; the rest of the set stays.
    deleted = steps["deleted"]["settings"]["preferences"]
    assert deleted["types"] == {} and deleted["timezone"] is None
    assert deleted["channels"] == {"in_app": True, "push": False}
    assert deleted["quiet_hours"] == [{"start": "22:00", "end": "07:00"}]

    # Another user gets their own (the defaults); signed out, nothing and a refusal.
    assert steps["other_user"]["settings"] == {"preferences": DEFAULTS, "loading": False,
                                               "error": None}
    signed_out = steps["signed_out"]
    assert signed_out["settings"] == {"preferences": None, "loading": False, "error": None}
    assert signed_out["update"]["code"] == "signed_out"

    # One GET per user, and one per reload(); nothing more.
    assert steps["totals"]["requests"] == ["GET", "PATCH", "PATCH", "GET", "PATCH", "GET"], env


def test_the_client_reads_merges_and_replaces_preferences_and_switches_a_device(
        live_server, push_service, keys):
    users = {key: new_user(key.lower()) for key in "ABCD"}
    sub_id = subscribe(live_server, push_service, keys, users["A"])
    report, result = node_report("preferences.mjs", {
        "NOTIFY_URL": live_server.url, "ORIGIN": NODE_ORIGIN, "SUB_ID": str(sub_id),
        **{f"USER_{key}": user for key, user in users.items()},
        **{f"TOKEN_{key}": mint(user) for key, user in users.items()}})
    assert "error" not in report, (report, result.stderr)
    steps = report["client"]

    # A new user: the defaults, read with a GET that carries no body.
    assert steps["defaults"]["answer"] == DEFAULTS
    assert steps["defaults"]["requests"] == [
        {"method": "GET", "path": "/api/preferences", "content_type": None}]

    # setPreferences: PATCH as application/merge-patch+json; the whole set comes back.
    patched = steps["patched"]["answer"]
    assert steps["patched"]["requests"] == [
        {"method": "PATCH", "path": "/api/preferences", "content_type": MERGE_PATCH}]
    assert patched["channels"] == {"in_app": True, "push": False}
    assert patched["types"] == {"comment": {"push": False}, "mention": {"in_app": False}}
    assert patched["timezone"] == "Asia/Seoul"
    assert patched["quiet_hours"] == [{"start": "22:00", "end": "07:00"}]
    assert patched["updated_at"].endswith("Z")
    assert steps["read_back"] == patched

    # A merge: null deleted the rule and the time zone; what the patch left out stayed.
    merged = steps["merged"]
    assert merged["types"] == {"mention": {"in_app": False}}
    assert merged["timezone"] is None
    assert merged["channels"] == {"in_app": False, "push": False}
    assert merged["quiet_hours"] == [{"start": "22:00", "end": "07:00"}]

    # Refusals: NotificationRequestError, validation_error, 400, the server's message;
    # nothing changed.
    refused = steps["refused"]
    for name in ("timezone", "channel", "window", "unknown_key"):
        error = refused[name]
        assert error["instance"] is True and error["name"] == "NotificationRequestError", name
        assert (error["code"], error["status"]) == ("validation_error", 400), (name, error)
        assert error["message"], name
    assert "Mars/Olympus_Mons" in refused["timezone"]["message"]
    assert "sound" in refused["unknown_key"]["message"]
    assert refused["after"] == merged

    # replacePreferences: PUT as JSON; what it left out took its default.
    replaced = steps["replaced"]
    assert replaced["requests"] == [
        {"method": "PUT", "path": "/api/preferences", "content_type": "application/json"}]
    assert replaced["answer"] == {**DEFAULTS, "quiet_hours": [{"start": "12:00", "end": "13:00"}],
                                  "updated_at": replaced["answer"]["updated_at"]}
    assert replaced["answer"]["updated_at"] > merged["updated_at"]
    round_trip = steps["round_trip"]
    assert {k: v for k, v in round_trip["answer"].items() if k != "updated_at"} == {
        k: v for k, v in round_trip["before"].items() if k != "updated_at"}
    assert server_preferences(live_server, users["A"]) == round_trip["answer"]

    assert steps["other_user"]["timezone"] is None
    assert steps["other_user"]["channels"] == {"in_app": True, "push": True}

    # One device: off, listed off, on again; another user's PATCH is a 404.
    device = steps["device"]
    assert device["requests"] == [
        {"method": "PATCH", "path": f"/api/push/subscriptions/{sub_id}",
         "content_type": "application/json"},
        {"method": "GET", "path": "/api/push/subscriptions", "content_type": None},
        {"method": "PATCH", "path": f"/api/push/subscriptions/{sub_id}",
         "content_type": "application/json"},
        {"method": "GET", "path": "/api/push/subscriptions", "content_type": None}]
    assert device["off"]["id"] == sub_id and device["off"]["enabled"] is False
    assert device["off"]["origin"] == push_service.origin
    assert [(s["id"], s["enabled"]) for s in device["listed_off"]] == [(sub_id, False)]
    assert device["on"]["enabled"] is True
    assert [(s["id"], s["enabled"]) for s in device["listed_on"]] == [(sub_id, True)]
    assert (device["not_yours"]["code"], device["not_yours"]["status"]) == ("not_found", 404)
    assert (device["bad_id"]["code"], device["bad_id"]["status"]) == ("validation_error", 0)
    assert [(s["id"], s["enabled"]) for s in device["after_not_yours"]] == [(sub_id, True)]

    assert (steps["bad_token"]["code"], steps["bad_token"]["status"]) == ("token_invalid", 401)
    assert (steps["unreachable"]["code"], steps["unreachable"]["status"]) == (
        "network_error", 0)

    check_hook_scenario(report["hook"], "node")


@pytest.mark.browser
def test_use_preferences_in_chromium_under_strict_mode(live_server, page, chromium):
    """The hook as a React app runs it: React's development build, the package from
    client/dist by its name, on a page of another origin than the server's (so every
    call is a CORS request, a PATCH with a preflight)."""
    require_build()
    users = [new_user("chromium-c"), new_user("chromium-d")]
    chromium.get(page.url)
    chromium.wait_for("window.pageReady === true", what="the test page's modules")
    chromium.run("window.startScenario(arguments[0]);", {
        "url": live_server.url, "users": users, "tokens": {user: mint(user) for user in users}})
    report = chromium.wait_for("window.scenarioReport", timeout=90,
                               what="the scenario's report")
    check_hook_scenario(report, "chromium")
