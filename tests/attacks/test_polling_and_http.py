"""Half-open Engine.IO sessions, F8 (overlapping long-polls), F4 (producer data that
breaks a feed) and F6 (a 500 with a traceback), against a real server.

- Half-open sessions: Engine.IO sessions that never send a Socket.IO CONNECT used to
  live as long as they answered pings. Fixed: at most MAX_PENDING_SESSIONS_PER_IP (10)
  per client address, and each is closed after CONNECT_TIMEOUT (2 s).
- F8: a second long-poll carrying ``Upgrade: websocket`` without ``Connection:
  upgrade`` slipped past the one-long-poll-per-session guard and hung. Fixed: 400
  ``transport_overlap`` at once, and (issue 20) the session is closed, as for any
  duplicate long-poll.
- F4: deeply nested ``data``, NaN/Infinity and lone surrogates were stored and broke
  every client's feed (and a poisoned row broke the replay for good). Fixed: refused
  with 400 at the door; a bad stored row is skipped by the replay.
- F6: a JSON body of 5,000 ``[`` made the parser recurse into a 500 and a traceback.
  Fixed: 400, no traceback.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime

import pytest
import requests

from tests.support.attack import (
    ATTACKER_IP,
    VICTIM_IP,
    attacker,
    eio_url,
    error_code,
    log_mark,
    log_since,
    no_traceback,
    notify_user,
    poll_open,
    poll_sign_in,
    token,
    unique,
)
from tests.support.clients import Recorder
from tests.support.servers import SERVER_API_KEY

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

MAX_PENDING = 10  # MAX_PENDING_SESSIONS_PER_IP
CONNECT_TIMEOUT = 2.0
HALF_OPEN_IP = "198.51.100.8"  # an address no other test in this module uses


# ---------------------------------------------------------------- half-open sessions

def test_half_open_polling_sessions_are_capped_per_address(server, bystander, figures):
    """Informational: one address opens Engine.IO polling handshakes and never sends a
    CONNECT (15 tries). Expected: 10 succeed, the rest get 429; CONNECT_TIMEOUT (2 s)
    later the open ones are gone (400 or a close packet) and the address may open a new
    one."""
    url, headers = eio_url(server), attacker(HALF_OPEN_IP)
    with bystander(server):
        opened, statuses = [], []
        for _ in range(MAX_PENDING + 5):
            response = requests.get(url, headers=headers, timeout=5)
            statuses.append(response.status_code)
            if response.status_code == 200:
                opened.append(json.loads(response.text[1:])["sid"])
        time.sleep(CONNECT_TIMEOUT + 1.0)
        after: dict[str, str] = {}

        def probe(sid: str) -> None:
            try:
                answer = requests.get(eio_url(server, sid=sid), headers=headers, timeout=2)
                after[sid] = "gone" if answer.status_code == 400 or answer.text == "1" \
                    else f"{answer.status_code} {answer.text[:20]!r}"
            except requests.RequestException:
                after[sid] = "alive (long-poll hung)"

        probes = [threading.Thread(target=probe, args=(sid,)) for sid in opened]
        for thread in probes:
            thread.start()
        for thread in probes:
            thread.join(5)
        again = requests.get(url, headers=headers, timeout=5)
        if again.status_code == 200:  # close it, it is ours
            sid = json.loads(again.text[1:])["sid"]
            requests.post(eio_url(server, sid=sid), data="1", headers=headers, timeout=5)
        still = sorted(v for v in after.values() if v != "gone")
        figures.update(statuses=statuses, still_open_after_timeout=still,
                       new_handshake_after=again.status_code)
        assert statuses == [200] * MAX_PENDING + [429] * 5, statuses
        assert not still, f"{len(still)} half-open sessions outlived CONNECT_TIMEOUT: {still}"
        assert again.status_code == 200


def test_a_websocket_without_connect_is_closed_after_connect_timeout(
        server, bystander, raw_sockets, figures):
    """Informational: an anonymous WebSocket that never sends a Socket.IO CONNECT.
    Expected: the server ends it after CONNECT_TIMEOUT (2 s): within ~3 s."""
    with bystander(server):
        raw = raw_sockets(server)
        after = raw.wait_end(4.0)
        figures.update(ended=raw.ended, ended_after_s=after)
        assert after is not None, "a session without CONNECT was still open after 4 s"
        assert CONNECT_TIMEOUT - 0.5 < after < CONNECT_TIMEOUT + 1.5, after


# ---------------------------------------------------------------- F8

def test_f8_second_long_poll_with_a_bare_upgrade_header_is_400(server, bystander, figures):
    """F8: a signed-in polling session has a long-poll open; a second GET on the same
    sid carries ``Upgrade: websocket`` but no ``Connection: upgrade``. Expected: 400
    with error code ``transport_overlap`` within 1 s (before, it hung beside the first),
    the session closed: the first poll returns the CLOSE packet ``1`` and a later poll
    gets 400 ``unknown_session`` (before issue 20, the session stayed open)."""
    with bystander(server):
        sid = poll_open(server)
        poll_sign_in(server, sid, token(unique("f8")))
        first: dict[str, object] = {}

        def long_poll() -> None:
            try:
                response = requests.get(eio_url(server, sid=sid), headers=attacker(),
                                        timeout=8)
                first.update(status=response.status_code, body=response.text)
            except requests.RequestException as exc:
                first["status"] = type(exc).__name__

        thread = threading.Thread(target=long_poll, daemon=True)
        thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        try:
            second = requests.get(eio_url(server, sid=sid), timeout=7,
                                  headers=attacker(Upgrade="websocket"))
            status, code = second.status_code, error_code(second)
        except requests.RequestException as exc:
            status, code = type(exc).__name__, None
        took = time.monotonic() - started
        thread.join(8)
        try:
            later = requests.get(eio_url(server, sid=sid), headers=attacker(), timeout=2)
            after = (later.status_code, error_code(later))
        except requests.RequestException as exc:
            after = (type(exc).__name__, None)  # held open: the session is alive
        figures.update(second_status=status, second_code=code, second_took_s=round(took, 2),
                       first=first, later=after)
        assert status == 400 and code == "transport_overlap", (status, code)
        assert took < 1.0, f"the overlapping long-poll took {took:.2f}s to be refused"
        assert first.get("status") == 200 and str(first.get("body")).endswith("1"), first
        assert after == (400, "unknown_session"), after


# ---------------------------------------------------------------- F4

def produce(server, raw_body: bytes) -> requests.Response:
    """POST /api/notifications with a raw body, as the producer."""
    return requests.post(server.url + "/api/notifications", data=raw_body, timeout=10,
                         headers={"Authorization": f"Bearer {SERVER_API_KEY}",
                                  "Content-Type": "application/json",
                                  "X-Forwarded-For": ATTACKER_IP})


def test_f4_deeply_nested_data_is_refused(server, bystander, figures):
    """F4: ``data`` nested 500 deep (about 3 KB, under the 8 KiB size limit). Expected:
    400 validation_error, and no traceback in the server log."""
    mark = log_mark(server)
    nested = '{"a":' * 500 + "1" + "}" * 500
    body = f'{{"user_id":"{unique("f4")}","type":"t","title":"deep","data":{nested}}}'.encode()
    with bystander(server):
        response = produce(server, body)
        figures.update(status=response.status_code, code=error_code(response))
        assert response.status_code == 400, (response.status_code, response.text[:200])
        assert error_code(response) == "validation_error"
    no_traceback(log_since(server, mark))


def test_f4_nan_and_infinity_are_refused(server, bystander, figures):
    """F4: raw bodies with NaN, Infinity and -Infinity in ``data`` (not JSON, but
    Python's parser takes them, and browsers' JSON.parse then fails on the feed).
    Expected: 400 each, no traceback in the server log."""
    mark = log_mark(server)
    results = {}
    with bystander(server):
        for literal in ("NaN", "Infinity", "-Infinity"):
            body = (f'{{"user_id":"{unique("f4")}","type":"t","title":"x",'
                    f'"data":{{"v":{literal}}}}}').encode()
            response = produce(server, body)
            results[literal] = (response.status_code, error_code(response))
        figures.update(results=results)
        assert all(status == 400 and code for status, code in results.values()), results
    no_traceback(log_since(server, mark))


def test_f4_lone_surrogate_in_title_is_refused(server, bystander, figures):
    """F4: a title holding the JSON escape ``\\ud800`` (a lone surrogate, not encodable
    as UTF-8), sent as raw body bytes. Expected: 400, no traceback in the server log."""
    mark = log_mark(server)
    body = b'{"user_id":"%s","type":"t","title":"bad \\ud800 title"}' % unique("f4").encode()
    with bystander(server):
        response = produce(server, body)
        figures.update(status=response.status_code, code=error_code(response))
        assert response.status_code == 400, (response.status_code, response.text[:200])
        assert error_code(response)
    no_traceback(log_since(server, mark))


def test_f4_a_poisoned_row_does_not_break_the_replay(server, bystander, figures):
    """F4: a row whose ``data`` is JSON nested 1,000 deep is written straight into the
    database for user U, then a normal notification is posted to U. Expected: U's
    socket connecting with ``last_id`` before the bad row gets the normal notification
    and sync_complete (the bad row skipped) and stays connected."""
    user = unique("f4-replay")
    before = notify_user(server, user, "before")
    with sqlite3.connect(server.db_path, timeout=10) as db:
        created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        bad = db.execute(
            "INSERT INTO notifications (user_id, type, title, body, data, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (user, "t", "poisoned", None, '{"a":' * 1000 + "1" + "}" * 1000, created),
        ).lastrowid
    db.close()
    good = notify_user(server, user, "after the poison")
    recorder = Recorder()
    with bystander(server):
        try:
            recorder.connect(server.url, auth={"token": token(user), "last_id": before},
                             transports=["websocket"], headers={"X-Forwarded-For": VICTIM_IP})
            recorder.wait_for("sync_complete", timeout=5)
            time.sleep(1.0)
            replayed = [n.get("id") for n in recorder.of("notification")]
            connected = recorder.client.connected
        except Exception as exc:  # the connect itself is what broke before
            replayed, connected = [], f"failed: {type(exc).__name__}: {exc}"[:200]
        finally:
            recorder.disconnect()
        figures.update(bad_id=bad, good_id=good, replayed=replayed, connected=connected,
                       connect_error=recorder.connect_error)
        assert connected is True, connected
        assert replayed == [good], f"replayed {replayed}; expected only {good}"


# ---------------------------------------------------------------- F6

def test_f6_deep_brackets_in_a_read_body_are_400(server, bystander, figures):
    """F6: POST /api/notifications/read with a user's token and a body of 5,000 ``[``.
    Expected: 400, no traceback in the server log (before: 500 and a traceback)."""
    mark = log_mark(server)
    with bystander(server):
        response = requests.post(
            server.url + "/api/notifications/read", data=b"[" * 5000, timeout=10,
            headers={"Authorization": f"Bearer {token(unique('f6'))}",
                     "Content-Type": "application/json", "X-Forwarded-For": ATTACKER_IP})
        figures.update(status=response.status_code, code=error_code(response))
        assert response.status_code == 400, (response.status_code, response.text[:200])
        assert error_code(response)
    no_traceback(log_since(server, mark))
