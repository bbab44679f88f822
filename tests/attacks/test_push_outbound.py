"""Web Push's outbound side (issue 20, findings 1 to 6 and, for push, 9 and 10),
against a real server and a hostile endpoint of our own on loopback
(tests/support/hostile_endpoint.py). The allowlist names that endpoint's origin, as
an operator's would name a push service.

- 1: a backslash in the host (``https://169.254.169.254\\.notify.windows.com/``) got
  past the allowlist, and requests connected to the part before it. Fixed: an
  endpoint that is not a plain URL is refused when a browser subscribes (400), a
  private or metadata IP literal too (422), and a stored one is never sent to.
- 2: redirects were followed (a 307 re-POSTed to any URL). Fixed: a 3xx is the
  answer: ``failed``, and its target is never reached.
- 3: a gzip bomb (256 KB, 256 MiB inflated) held the worker 20 s and took RSS to
  919 MB. Fixed: at most 8 KiB is read, never inflated.
- 4: 50 cookies of 60 KiB, over 20 test pushes, took RSS to 731 MB. Fixed: no jar,
  and a head over 8 KiB is not read.
- 5: an endpoint dripping a byte every few seconds stopped every user's pushes.
  Fixed: one deadline per send (10 s), and each send settles on its own.
- 6: test-push calls whose clients hung up piled up outbound connections. Fixed: one
  call per user at a time (429 ``rate_limited`` with Retry-After), and every
  connection ends by the deadline.
- 9, 10: a lone surrogate or a NUL in the endpoint, and an ``auth`` of 70 ``=``. Fixed:
  400, never a 500 or a 503.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.support.attack import (
    RSS_LIMIT_MB,
    attacker,
    error_code,
    log_mark,
    log_since,
    no_traceback,
    notify_user,
    token,
    unique,
    worker_pid,
)
from tests.support.hostile_endpoint import BOMB_INFLATED, HostileEndpoint, gzip_bomb
from tests.support.push_service import VapidKeys, b64url

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

DEADLINE = 10.0  # utils/push/http.py: the whole of one send
SLACK = 1.5
KEYS = VapidKeys.generate()
# The "internal admin" a redirect points at: not on the allowlist, never to be reached.
INTERNAL = HostileEndpoint()
HOSTILE = HostileEndpoint(redirect_to=INTERNAL.url("ok", "internal-admin"))
SERVER_SETTINGS = {
    "VAPID_PRIVATE_KEY": KEYS.private,
    "VAPID_SUBJECT": "mailto:push@example.com",
    "WEB_PUSH_ENDPOINT_ORIGINS": HOSTILE.origin,
}


@pytest.fixture(scope="module", autouse=True)
def _endpoints():
    yield
    HOSTILE.close()
    INTERNAL.close()


def user_headers(user: str) -> dict[str, str]:
    return attacker(Authorization=f"Bearer {token(user)}")


def browser_keys() -> dict[str, str]:
    return {"p256dh": VapidKeys.generate().public, "auth": b64url(b"0123456789abcdef")}


def subscribe(server, user: str, endpoint: str, **keys: str) -> requests.Response:
    return requests.post(server.url + "/api/push/subscriptions", headers=user_headers(user),
                         json={"endpoint": endpoint, "expirationTime": None,
                               "keys": {**browser_keys(), **keys}}, timeout=10)


def subscribed(server, user: str, endpoint: str) -> None:
    response = subscribe(server, user, endpoint)
    assert response.status_code == 201, response.text


def push_test(server, user: str, timeout: float = 30) -> requests.Response:
    """POST /api/push/test as ``user``."""
    return requests.post(server.url + "/api/push/test", headers=user_headers(user),
                         timeout=timeout)


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def connections_to(pid: int, port: int) -> int:
    """The TCP sockets of process ``pid`` connected to 127.0.0.1:``port`` (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    remote = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == remote and fields[9] in inodes:
            count += 1
    return count


def ours(pid: int, prefix: str) -> int:
    """The worker's connections to HOSTILE, less those to paths not under ``prefix``
    (another test's retries, say)."""
    others = HOSTILE.open_connections() - HOSTILE.open_connections(prefix)
    return connections_to(pid, HOSTILE.port) - others


def wait_closed(prefix: str, timeout: float) -> list:
    """HOSTILE's requests under ``prefix`` so far, once each one's connection has
    closed (or ``timeout`` passed)."""
    came = HOSTILE.received(prefix)
    deadline = time.monotonic() + timeout
    while any(r.closed_at is None for r in came) and time.monotonic() < deadline:
        time.sleep(0.1)
    return came


# ---------------------------------------------------------------- 1: the host

@pytest.mark.parametrize(("endpoint", "status"), [
    ("https://169.254.169.254\\.notify.windows.com/latest/", 400),  # the bypass
    ("https://127.0.0.1\\.notify.windows.com/x", 400),
    ("https://localhost\\.notify.windows.com/x", 400),
    ("{origin}\\.notify.windows.com/ok/x", 400),
    ("http://user@{host}/ok/x", 400),
    ("{origin}/ok/a b", 400),
    ("{origin}/ok/a\\b", 400),
    ("{origin}/ok/a\tb", 400),
    ("{origin}/ok/%zz", 400),
    ("http://127.1:{port}/ok/x", 400),
    ("https://169.254.169.254/latest/meta-data/", 422),
    ("https://[fd00:ec2::254]/latest/", 422),
    ("http://[::ffff:169.254.169.254]:{port}/ok/x", 422),
])
def test_an_endpoint_that_is_not_plain_or_public_is_refused_at_subscribe(
        server, figures, endpoint, status):
    endpoint = endpoint.format(origin=HOSTILE.origin, host=HOSTILE.origin[7:],
                               port=HOSTILE.port)
    before = len(HOSTILE.received())
    mark = log_mark(server)
    response = subscribe(server, unique("ssrf"), endpoint)
    figures.update(endpoint=endpoint, status=response.status_code, code=error_code(response))
    assert response.status_code == status, response.text
    assert error_code(response) == ("validation_error" if status == 400
                                    else "push_endpoint_not_allowed")
    assert len(HOSTILE.received()) == before  # nothing was sent anywhere
    no_traceback(log_since(server, mark))


def _store(server, user: str, endpoints: list[str]) -> None:
    """Subscriptions written straight into the server's database, as an older server
    (before issue 20) would have stored them."""
    now = datetime.utcnow().isoformat(" ")
    with sqlite3.connect(server.db_path, timeout=10) as db:
        for endpoint in endpoints:
            keys = browser_keys()
            db.execute("INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth, "
                       "created_at) VALUES (?, ?, ?, ?, ?)",
                       (user, endpoint, keys["p256dh"], keys["auth"], now))


def test_a_stored_endpoint_that_is_not_plain_is_never_sent_to(server, figures):
    """Rows the old parser let in, each allowlisted by its urlsplit() origin: the test
    push and the dispatcher both refuse them, and nothing reaches the endpoint."""
    user, name = unique("legacy"), unique("secret")
    _store(server, user, [f"{HOSTILE.origin}/ok/{name}-1\\x",
                          f"{HOSTILE.origin}/ok/{name}-2 x",
                          "https://169.254.169.254\\.notify.windows.com/latest/"])
    mark = log_mark(server)
    response = push_test(server, user)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    figures.update(results=results)
    assert [(r["outcome"], r["status"]) for r in results] == [("failed", None)] * 3
    notify_user(server, user, "to the stored rows", push="always")
    time.sleep(2.0)  # the dispatcher's pass comes at once for "always"
    assert HOSTILE.received(f"/ok/{name}") == []
    logged = log_since(server, mark)
    assert "not plain" in logged and name not in logged  # the path is never logged
    no_traceback(logged)


# ---------------------------------------------------------------- 2: redirects

def test_a_redirect_is_an_answer_and_never_followed(server, figures):
    user, name = unique("redirected"), unique("r")
    for mode in ("redirect-302", "redirect-307"):
        subscribed(server, user, HOSTILE.url(mode, name))
    response = push_test(server, user)
    results = sorted((r["status"], r["outcome"]) for r in response.json()["results"])
    notify_user(server, user, "redirect me", push="always")
    came = [HOSTILE.wait_for(f"/{mode}/{name}", 2) for mode in ("redirect-302",
                                                                "redirect-307")]
    time.sleep(1.0)
    figures.update(results=results, requests=sum(map(len, came)),
                   internal_reached=len(INTERNAL.received()))
    assert results == [(302, "failed"), (307, "failed")]
    assert INTERNAL.received() == []


# ---------------------------------------------------------------- 3 and 4: answers

def test_a_gzip_bomb_is_never_inflated(fresh_server, bystander, figures):
    user, name = unique("bombed"), unique("g")
    subscribed(fresh_server, user, HOSTILE.url("gzip", name))
    bomb = gzip_bomb()  # made before the clock starts
    took = []
    with bystander(fresh_server) as by:
        for _ in range(5):
            started = time.monotonic()
            response = push_test(fresh_server, user)
            took.append(round(time.monotonic() - started, 2))
            assert response.json()["results"][0]["status"] == 200
        notify_user(fresh_server, user, "bomb", push="always")
        came = HOSTILE.wait_for(f"/gzip/{name}", 6)
    figures.update(bomb_kb=len(bomb) // 1024, inflated_mb=BOMB_INFLATED // 2**20,
                   test_push_s=took, rss_growth_limit_mb=RSS_LIMIT_MB)
    assert max(took) < 2.0
    assert all(r.headers.get("accept-encoding") == "identity" for r in came)
    assert by.rss_growth_mb < RSS_LIMIT_MB


def test_cookies_are_never_kept_nor_read(fresh_server, bystander, figures):
    user, name = unique("cookied"), unique("c")
    subscribed(fresh_server, user, HOSTILE.url("cookies", name))
    outcomes = set()
    with bystander(fresh_server) as by:
        for _ in range(20):
            (result,) = push_test(fresh_server, user).json()["results"]
            outcomes.add((result["outcome"], result["status"]))
    came = HOSTILE.received(f"/cookies/{name}")
    figures.update(outcomes=sorted(outcomes, key=str), requests=len(came))
    assert outcomes == {("failed", None)}  # a 3 MB head is not an answer
    assert len(came) == 20 and not any(r.refused for r in came)
    assert not any("cookie" in r.headers for r in came)
    assert by.rss_growth_mb < RSS_LIMIT_MB


# ---------------------------------------------------------------- 5: a slow endpoint

def test_a_dripping_endpoint_holds_only_its_own_send(server, bystander, figures):
    """User A's endpoint drips a byte every 2 s. B's pushes, one every 1.5 s, each
    arrive within 3 s, and A's send ends at the deadline."""
    slow, other = unique("slow"), unique("other")
    slow_name, other_name = unique("d"), unique("o")
    subscribed(server, slow, HOSTILE.url("drip", slow_name))
    subscribed(server, other, HOSTILE.url("ok", other_name))
    latencies = []
    with bystander(server):
        notify_user(server, slow, "drip", push="always")
        HOSTILE.wait_for(f"/drip/{slow_name}", 1, timeout=5)
        for i in range(8):
            started = time.monotonic()
            notify_user(server, other, f"o{i}", push="always")
            HOSTILE.wait_for(f"/ok/{other_name}", i + 1, timeout=8)
            latencies.append(round(time.monotonic() - started, 2))
            time.sleep(max(0.0, 1.5 - latencies[-1]))
    requests.delete(server.url + "/api/push/subscriptions", headers=user_headers(slow),
                    json={"endpoint": HOSTILE.url("drip", slow_name)}, timeout=10)  # no retries
    first = wait_closed(f"/drip/{slow_name}", DEADLINE + 5)[0]
    held = first.closed_at - first.at if first.closed_at else None
    figures.update(other_push_latency_s=latencies, drip_send_held_s=held and round(held, 2))
    assert max(latencies) < 3.0
    assert held is not None and held <= DEADLINE + SLACK


# ---------------------------------------------------------------- 6: test pushes

def test_test_push_calls_do_not_pile_up(server, figures):
    user, name = unique("piler"), unique("p")
    for i in range(3):
        subscribed(server, user, HOSTILE.url("drip", f"{name}-{i}"))
    prefix = f"/drip/{name}"
    HOSTILE.watch(prefix)
    pid = worker_pid(server)
    files_before = open_files(pid)
    with pytest.raises(requests.Timeout):
        push_test(server, user, timeout=0.5)  # the client hangs up; the call goes on
    HOSTILE.wait_for(prefix, 3, timeout=5)
    refused = []
    for i in range(40):
        try:
            refused.append(push_test(server, user, timeout=5 if i % 2 else 0.2))
        except requests.Timeout:
            pass  # hung up too
    files_during = open_files(pid)
    outbound_during = ours(pid, prefix)
    held = wait_closed(prefix, DEADLINE + 5)
    time.sleep(0.5)
    files_after = open_files(pid)
    outbound_after = ours(pid, prefix)
    longest = max(r.closed_at - r.at for r in held if r.closed_at)
    figures.update(answered=len(refused), statuses=sorted({r.status_code for r in refused}),
                   endpoint_connections=len(held), max_open=HOSTILE.max_open(prefix),
                   open_files=(files_before, files_during, files_after),
                   outbound=(outbound_during, outbound_after),
                   longest_held_s=round(longest, 2))
    assert refused and all(r.status_code == 429 for r in refused)
    assert all(error_code(r) == "rate_limited" and r.headers["Retry-After"] == "10"
               for r in refused)
    assert len(held) == 3 and HOSTILE.max_open(prefix) == 3
    assert longest <= DEADLINE + SLACK
    assert outbound_during <= 3 and outbound_after == 0
    assert files_after <= files_before + 2
    # The call ended, so the next one runs.
    for i in range(3):
        requests.delete(server.url + "/api/push/subscriptions", headers=user_headers(user),
                        json={"endpoint": HOSTILE.url("drip", f"{name}-{i}")}, timeout=10)
    subscribed(server, user, HOSTILE.url("ok", name))
    (result,) = push_test(server, user).json()["results"]
    assert result["outcome"] == "sent"


# ---------------------------------------------------------------- 9 and 10: input

@pytest.mark.parametrize(("method", "body"), [
    ("delete", '{"endpoint": "\\ud800"}'),
    ("delete", '{"endpoint": "http://127.0.0.1/\\u0000"}'),
    ("delete", '{"endpoint": 7}'),
    ("post", '{"endpoint": "http://127.0.0.1/\\ud800", "keys": {}}'),
    ("post", "auth-70"),
    ("post", "auth-padded-wrong"),
    ("post", "p256dh-compressed"),
])
def test_bad_input_on_push_routes_is_a_400(server, figures, method, body):
    if not body.startswith("{"):
        keys = browser_keys()
        keys.update({"auth-70": {"auth": "A" * 22 + "=" * 70},
                     "auth-padded-wrong": {"auth": keys["auth"] + "="},
                     "p256dh-compressed": {"p256dh": b64url(b"\x02" + bytes(32))}}[body])
        body = json.dumps({"endpoint": HOSTILE.url("ok", unique("k")), "keys": keys})
    mark = log_mark(server)
    response = getattr(requests, method)(
        server.url + "/api/push/subscriptions", data=body.encode(), timeout=10,
        headers={**user_headers(unique("input")), "Content-Type": "application/json"})
    figures.update(status=response.status_code, code=error_code(response))
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    no_traceback(log_since(server, mark))
