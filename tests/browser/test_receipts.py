"""Delivery receipts from the reference client (the client package, client/), in WebKit
and Chromium, against a production gunicorn server on each worker: the server records
``delivered_at`` for what the page received live and what it replayed at connect; a
receipt that found the connection gone is sent after the reconnect; ``receipts:
false`` sends none. The server's record is read back through GET /api/notifications."""

from __future__ import annotations

import time

import pytest

from tests.support.browser.helpers import events, new_user, open_page, wait_event

pytestmark = [pytest.mark.browser, pytest.mark.server]

QUICK = {"reconnectionDelay": 200, "reconnectionDelayMax": 1000}


def start_reference(page, server, user, **options):
    page.run("window.harness.token = arguments[0];", server.token(user))
    page.run("window.harness.reference(arguments[0], arguments[1]);", server.url,
             {"storageKey": f"last_id:{user}", "socketOptions": QUICK, **options})
    wait_event(page, "client:sync_complete")


def wait_delivered(server, user, ids, timeout=10):
    """The inbox once every id in ``ids`` has delivered_at; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        inbox = server.inbox(user)
        if all(inbox.get(i, {}).get("delivered_at") for i in ids):
            return inbox
        if time.monotonic() > deadline:
            state = {i: inbox.get(i, {}).get("delivered_at") for i in ids}
            raise AssertionError(f"delivered_at after {timeout}s: {state}")
        time.sleep(0.1)


def acked(page) -> list[int]:
    return [i for e in events(page, "client:receipts") if "updated" in e["data"]
            for i in e["data"]["ids"]]


def test_live_and_replayed_notifications_are_recorded_as_delivered(page, server,
                                                                   page_origin):
    user = new_user(page, "receipts")
    start_reference(page, server, user)
    live = server.notify(user, "live")
    wait_event(page, "client:notification", match={"id": live})
    wait_delivered(server, user, [live])
    assert live in acked(page)

    page.get("about:blank")  # the tab is gone; these wait for its return
    missed = [server.notify(user, f"missed {i}") for i in range(3)]
    assert not any(server.inbox(user)[i]["delivered_at"] for i in missed)

    open_page(page, page_origin)
    start_reference(page, server, user)
    assert events(page, "client:sync_complete")[0]["data"]["replayed"] == 3
    inbox = wait_delivered(server, user, missed)
    # One batch for the whole replay, and the server counted each id once.
    receipts = [e["data"] for e in events(page, "client:receipts")]
    assert receipts == [{"ids": missed, "updated": 3}]
    assert all(inbox[i]["read_at"] is None for i in [live, *missed])


def test_a_receipt_that_found_no_connection_is_sent_after_the_reconnect(page, server):
    user = new_user(page, "reconnect")
    # The reconnect comes 1 s after the drop: the batch, due after 0.2 s, finds no
    # connection, and only the flush on connect can send it.
    start_reference(page, server, user, socketOptions={
        "reconnectionDelay": 1000, "reconnectionDelayMax": 1000, "randomizationFactor": 0})
    # The connection drops the moment the notification is handed to the app, before
    # the receipt's batch is due (as when iOS suspends the tab right then).
    page.run("""
        const client = window.harness.client;
        const off = client.on("notification", () => { off(); client.socket.io.engine.close(); });
    """)
    sent = server.notify(user, "then the connection drops")
    wait_event(page, "client:notification", match={"id": sent})
    wait_event(page, "client:state", match={"state": "disconnected"})

    dropped_at = events(page, "client:state")[-1]["at"]
    time.sleep(0.5)
    assert server.inbox(user)[sent]["delivered_at"] is None  # the batch found no socket

    wait_delivered(server, user, [sent])
    connects = [e for e in events(page, "client:state") if e["data"]["state"] == "connected"]
    receipts = events(page, "client:receipts")
    assert [e["data"] for e in receipts] == [{"ids": [sent], "updated": 1}]
    assert len(connects) == 2 and dropped_at < connects[1]["at"] < receipts[0]["at"]


def test_receipts_off_records_nothing(page, server):
    user = new_user(page, "off")
    start_reference(page, server, user, receipts=False)
    sent = server.notify(user, "not acknowledged")
    wait_event(page, "client:notification", match={"id": sent})
    time.sleep(1.5)  # the batch would have gone after 0.2 s
    assert server.inbox(user)[sent]["delivered_at"] is None
    assert events(page, "client:receipts") == []
