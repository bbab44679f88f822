"""F2, F3 and F9: a signed-in client abusing the Socket.IO protocol itself.

- F2: the events ``connect`` and ``disconnect`` sent by a client ran the server's own
  connect and disconnect handlers: a socket could join another user's room, and a
  socket whose disconnect handler had run was forgotten by the sockets-per-user cap and
  the token-expiry sweeper while it still received the user's notifications. Fixed:
  reserved event names run no handler, the server closes the connection.
- F3: binary events (attachments announced, then sent over WebSocket or as base64
  ``b`` packets over polling) piled up in the worker's memory. Fixed: no binary at all.
- F9: the event-flood limit only ended the Socket.IO namespace; the Engine.IO
  connection stayed and a new CONNECT got a fresh event bucket. Fixed: the flood
  limit closes the whole connection.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import requests
from websocket import ABNF

from tests.support.attack import (
    RSS_LIMIT_MB,
    attacker,
    eio_url,
    error_code,
    frame,
    notify_user,
    poll_open,
    poll_sign_in,
    received,
    token,
    unique,
)

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

MAX_SOCKETS_PER_USER = 20  # the default


# ---------------------------------------------------------------- F2

def test_f2_client_sent_disconnect_event_closes_the_socket(server, bystander, raw_sockets,
                                                           figures):
    """F2: a signed-in socket sends the event ``42["disconnect"]``. Expected: no handler
    runs; the server closes the connection (before, the server forgot the socket yet
    kept it in the user's room)."""
    user = unique("f2-self")
    with bystander(server):
        raw = raw_sockets(server)
        raw.sign_in(token(user))
        raw.send('42["disconnect"]')
        after = raw.wait_end(1.5)
        still_delivered = False
        if raw.ended is None:
            notify_user(server, user, "after-own-disconnect")
            still_delivered = bool(received([raw], "after-own-disconnect", 1.5))
        figures.update(ended=raw.ended, ended_after_s=after, still_delivered=still_delivered)
        assert raw.ended, (f"the socket stayed open after 42[\"disconnect\"] "
                           f"(still received the user's notifications: {still_delivered})")


def test_f2_client_sent_connect_event_cannot_join_another_users_room(
        server, bystander, raw_sockets, figures):
    """F2: a socket signed in as one user sends ``42["connect",null,{"token": <another
    user's token>}]``. Expected: the server closes that connection and the socket never
    receives the other user's notifications."""
    victim = unique("f2-victim")
    with bystander(server):
        raw = raw_sockets(server)
        raw.sign_in(token(unique("f2-intruder")))
        raw.send('42["connect",null,' + json.dumps({"token": token(victim)}) + "]")
        after = raw.wait_end(1.5)
        notify_user(server, victim, "for-the-victim-only")
        leaked = bool(received([raw], "for-the-victim-only", 1.5))
        figures.update(ended=raw.ended, ended_after_s=after, got_victims_notification=leaked,
                       joined_as_victim=any(victim in str(t) for t in raw.texts))
        assert not leaked, "the intruder's socket received the victim's notification"
        assert raw.ended, "the socket stayed open after 42[\"connect\",...]"


def test_f2_disconnect_event_does_not_lift_the_socket_cap(server, bystander, raw_sockets,
                                                          figures):
    """F2: one user opens sockets one after another, each sending ``42["disconnect"]``
    once signed in (25 attempts, MAX_SOCKETS_PER_USER=20). Expected: never more than 20
    live sockets receive that user's notifications."""
    user = unique("f2-cap")
    user_token = token(user)
    live, refused = [], 0
    with bystander(server):
        for _ in range(MAX_SOCKETS_PER_USER + 5):
            raw = raw_sockets(server)
            try:
                raw.sign_in(user_token)
            except AssertionError:
                refused += 1
                raw.close()
                continue
            raw.send('42["disconnect"]')
            live.append(raw)
        time.sleep(0.3)
        notify_user(server, user, "to-every-live-socket")
        receivers = received(live, "to-every-live-socket", 2.0)
        figures.update(signed_in=len(live), refused=refused, receivers=len(receivers))
        assert len(receivers) <= MAX_SOCKETS_PER_USER, (
            f"{len(receivers)} sockets of one user receive its notifications")


def test_f2_disconnect_event_does_not_outlive_token_expiry(server, bystander, raw_sockets,
                                                           figures):
    """F2: a socket whose token expires in 3 s sends ``42["disconnect"]``. Expected: it
    does not keep receiving the user's notifications after ``exp`` (before, the expiry
    sweeper had forgotten it)."""
    user = unique("f2-exp")
    ttl = 3
    with bystander(server):
        raw = raw_sockets(server)
        expires = time.monotonic() + ttl
        raw.sign_in(token(user, ttl=ttl))
        raw.send('42["disconnect"]')
        raw.wait_end(expires + 1.5 - time.monotonic())  # past exp and a sweep
        ended = raw.ended
        notify_user(server, user, "after-expiry")
        late = bool(received([raw], "after-expiry", 1.0))
        figures.update(ended=ended, received_after_exp=late)
        assert not late, "a socket kept receiving notifications after its token expired"


# ---------------------------------------------------------------- F3

def test_f3_binary_event_over_websocket_closes_the_session(fresh_server, bystander,
                                                           raw_sockets, figures):
    """F3: a signed-in socket announces a binary event with attachments
    (``45<n>-["x",{"_placeholder":true,"num":0}]``) and sends 30 KB binary frames (at
    most 1,000, ~4 s). Expected: no binary at all, the session is closed at the
    announcement; the worker's memory grows less than 20 MB."""
    attachment = frame(b"\x00" * 30_000, ABNF.OPCODE_BINARY)
    with bystander(fresh_server) as by:
        raw = raw_sockets(fresh_server)
        raw.sign_in(token(unique("f3-ws")))
        announced = time.monotonic()
        raw.send('4510000-["x",{"_placeholder":true,"num":0}]')
        result = raw.flood(attachment, seconds=4.0, max_sends=1000)
        raw.wait_end(1.0)
        after = None if raw.ended_at is None else round(raw.ended_at - announced, 2)
        figures.update(result, ended=raw.ended, ended_after_announcement_s=after)
        assert raw.ended, f"{result['sends']} binary attachments accepted, session open"
        assert after is not None and after < 2, result
    assert by.rss_growth_mb < RSS_LIMIT_MB


def test_f3_binary_packet_over_polling_is_400(server, bystander, figures):
    """F3: a signed-in polling session POSTs a base64 binary packet ``bAAAA...``.
    Expected: 400 in the contract's error shape {"error": {"code": ...}}."""
    with bystander(server):
        sid = poll_open(server)
        poll_sign_in(server, sid, token(unique("f3-poll")))
        response = requests.post(eio_url(server, sid=sid), data="b" + "A" * 64,
                                 headers=attacker(), timeout=5)
        figures.update(status=response.status_code, code=error_code(response))
        assert response.status_code == 400, (response.status_code, response.text[:200])
        assert error_code(response), response.text[:200]


def test_f3_binary_posts_over_polling_do_not_grow_memory(fresh_server, bystander, figures):
    """F3: a signed-in polling session announces a binary event with 10,000 attachments,
    then sends up to 2,000 POSTs (at most 5 s) each holding a ~15 KB base64 ``b``
    packet. Expected: every one refused (4xx); the worker's memory grows less than 20 MB."""
    body = "b" + base64.b64encode(b"\x00" * 15_000).decode()
    statuses: dict[int, int] = {}
    with bystander(fresh_server) as by:
        sid = poll_open(fresh_server)
        poll_sign_in(fresh_server, sid, token(unique("f3-mem")))
        requests.post(eio_url(fresh_server, sid=sid), headers=attacker(), timeout=5,
                      data='4510000-["x",{"_placeholder":true,"num":0}]')
        url, headers = eio_url(fresh_server, sid=sid), attacker()
        started = time.monotonic()
        with requests.Session() as session:
            for _ in range(2000):
                if time.monotonic() - started > 5:
                    break
                try:
                    status = session.post(url, data=body, headers=headers, timeout=5).status_code
                except requests.RequestException:
                    status = 0
                statuses[status] = statuses.get(status, 0) + 1
        figures.update(posts=sum(statuses.values()), statuses=statuses,
                       seconds=round(time.monotonic() - started, 2))
        assert not [s for s in statuses if 200 <= s < 300], statuses
    figures.update(rss_growth_mb=round(by.rss_growth_mb, 1))
    assert by.rss_growth_mb < RSS_LIMIT_MB


# ---------------------------------------------------------------- F9

def test_f9_event_flood_ends_the_whole_connection(server, bystander, raw_sockets, figures):
    """F9: a signed-in WebSocket sends ``42<id>["sync",{"after_id":0}]`` events in bursts
    of 100 as fast as the server answers them, for 5 s, and signs in again on the same
    connection whenever the server ends its namespace (before, a new CONNECT got a fresh
    event bucket). Expected: after the flood limit the whole Engine.IO connection is
    closed (no new CONNECT on that session), and the events acked successfully stay
    within SOCKET_EVENT_BURST + SOCKET_EVENT_RATE x elapsed + 5 (20 + 5/s)."""
    user_token = token(unique("f9"))
    acks = {"ok": 0, "rate_limited": 0, "other": 0}
    dropped, connected = threading.Event(), threading.Event()
    with bystander(server):
        raw = raw_sockets(server)
        raw.sign_in(user_token)
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set() and raw.ended is None:
                message = raw.read(0.2)
                if not isinstance(message, str):
                    continue
                if message.startswith("43"):
                    try:
                        body = json.loads(message[2:].lstrip("0123456789"))[0]
                    except (ValueError, IndexError):
                        body = None
                    kind = ("ok" if isinstance(body, dict) and "notifications" in body else
                            "rate_limited" if error_code_of(body) == "rate_limited" else
                            "other")
                    acks[kind] += 1
                elif message.startswith(("41", "44")):
                    dropped.set()
                elif message.startswith("40"):
                    connected.set()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        started = time.monotonic()
        sent = reconnects = 0
        while time.monotonic() - started < 5 and raw.ended is None and sent < 20_000:
            before = sum(acks.values())
            for _ in range(100):
                sent += 1
                if not raw.send(f'42{sent}["sync",{{"after_id":0}}]'):
                    break
            wait_until = time.monotonic() + 1.0
            while (time.monotonic() < wait_until and raw.ended is None
                   and not dropped.is_set() and sum(acks.values()) - before < 100):
                time.sleep(0.005)
            if dropped.is_set() and raw.ended is None:
                # the namespace ended but not the connection: sign in again on it
                dropped.clear()
                connected.clear()
                reconnects += 1
                raw.send("40" + json.dumps({"token": user_token}))
                connected.wait(1.0)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 2
        while raw.ended is None and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(5)
        ended_at = raw.ended_at
        try:  # a new Socket.IO CONNECT on the flooded Engine.IO session
            session = requests.post(eio_url(server, sid=raw.handshake["sid"]),
                                    data="40" + json.dumps({"token": user_token}),
                                    headers=attacker(), timeout=3).status_code
        except requests.RequestException as exc:
            session = type(exc).__name__
        budget = 20 + 5 * elapsed + 5
        figures.update(sent=sent, acks=acks, reconnects=reconnects, ended=raw.ended,
                       elapsed_s=round(elapsed, 2), ok_budget=round(budget, 1),
                       ended_after_s=None if ended_at is None else round(ended_at - started, 2),
                       connect_again_on_that_sid=session)
        assert acks["ok"] <= budget, f"{acks['ok']} events handled in {elapsed:.1f}s"
        assert raw.ended, "the Engine.IO connection outlived the event flood"
        assert session == 400, f"a new CONNECT on the flooded session got {session}"


def error_code_of(body: object) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None
