"""EngineIOGuard on its own, in front of a stand-in for Engine.IO: which sessions it
lets through, which it answers itself, and which it closes. The same rules against
real gunicorn are in tests/attacks/test_engineio_hygiene.py."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest

from utils.edge.eio_guard import EngineIOGuard
from utils.edge.throttle import SessionBudgets

SID = "Qm9vdHN0cmFwcGVkU2lk"
MAX = 1024


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class EngineIO:
    """Holds sessions by id and answers 200 ``ok``; a GET waits on ``release`` when
    ``hold`` is set, as a long-poll waits for packets."""

    def __init__(self) -> None:
        self.sessions = {SID}
        self.ended: list[str] = []
        self.calls = 0
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response) -> list[bytes]:
        self.calls += 1
        if environ["REQUEST_METHOD"] == "GET" and self.hold:
            self.entered.set()
            self.release.wait(5)
        body = environ["wsgi.input"].read() if environ["REQUEST_METHOD"] == "POST" else b""
        if body == b"1":  # a CLOSE packet ends the session
            self.sessions.discard(SID)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def end(self, sid: str) -> None:
        self.ended.append(sid)
        self.sessions.discard(sid)


def make_guard(engine: EngineIO, **options: Any) -> EngineIOGuard:
    return EngineIOGuard(engine, MAX, known_session=engine.sessions.__contains__,
                         end_session=engine.end, read_rate=MAX,
                         address_of=lambda environ: environ.get("HTTP_X_FORWARDED_FOR", "peer"),
                         sleep=lambda seconds: None, **options)


def call(guard: EngineIOGuard, method: str = "GET", body: bytes = b"",
         **query: str) -> tuple[int, dict[str, str], bytes]:
    headers = {name.upper(): value for name, value in query.items() if name.startswith("http_")}
    params = {"EIO": "4", "transport": "polling",
              **{k: v for k, v in query.items() if not k.startswith("http_")}}
    environ = {"PATH_INFO": "/socket.io/", "REQUEST_METHOD": method,
               "QUERY_STRING": "&".join(f"{k}={v}" for k, v in params.items()),
               "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)), **headers}
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = int(status.split()[0]), dict(response_headers)

    data = b"".join(guard(environ, start_response))
    return answer["status"], answer["headers"], data


def code(data: bytes) -> str:
    return json.loads(data)["error"]["code"]


# ---------------------------------------------------------------- unknown sessions

UPGRADE = {"http_upgrade": "websocket", "http_connection": "Upgrade"}


@pytest.mark.parametrize("method, extra", [
    ("GET", {}),
    ("POST", {}),
    ("GET", {"transport": "websocket", **UPGRADE}),
])
def test_an_unknown_sid_is_answered_by_the_guard_without_echo_or_budget(method, extra):
    engine = EngineIO()
    guard = make_guard(engine)
    made_up = "zq" * 2000
    status, headers, data = call(guard, method, b"4hello", sid=made_up, **extra)
    assert status == 400 and code(data) == "unknown_session"
    assert headers["Content-Type"] == "application/json"
    assert made_up not in data.decode() and "zq" not in data.decode()
    assert "Invalid session" in data.decode()[:80]  # what the doctor recognises
    assert engine.calls == 0
    assert len(guard.poll_budgets) == 0


def test_a_post_without_a_sid_is_an_unknown_session():
    engine = EngineIO()
    status, _, data = call(make_guard(engine), "POST", b"40")
    assert status == 400 and code(data) == "unknown_session"
    assert engine.calls == 0


def test_unknown_sessions_are_limited_per_address():
    guard = make_guard(EngineIO(), unknown_per_minute=3)
    statuses = [call(guard, "POST", b"4x", sid=f"nope{n}", http_x_forwarded_for="203.0.113.5")
                for n in range(5)]
    assert [status for status, _, _ in statuses] == [400, 400, 400, 429, 429]
    status, headers, data = statuses[-1]
    assert code(data) == "rate_limited" and headers["Retry-After"] == "60"
    other, _, _ = call(guard, "POST", b"4x", sid="nope", http_x_forwarded_for="203.0.113.6")
    assert other == 400


def test_a_known_session_reaches_engineio_and_its_budget_goes_with_it():
    engine = EngineIO()
    guard = make_guard(engine)
    assert call(guard, "POST", b"4hello", sid=SID)[0] == 200
    assert engine.calls == 1 and len(guard.poll_budgets) == 1
    assert call(guard, "POST", b"1", sid=SID)[0] == 200  # CLOSE: the session ends
    assert len(guard.poll_budgets) == 0


# ---------------------------------------------------------------- closing sessions

@pytest.mark.parametrize("body, status, expected", [
    (b"abc", 400, "bad_packet"),
    (b"\xff\xfe", 400, "bad_packet"),
    (b"4hi\x1e\x1e", 400, "bad_packet"),
    (b"4" + b"x" * MAX, 413, "payload_too_large"),
])
def test_a_malformed_post_closes_the_session(body, status, expected):
    engine = EngineIO()
    guard = make_guard(engine)
    call(guard, "POST", b"4hello", sid=SID)
    answer, _, data = call(guard, "POST", body, sid=SID)
    assert (answer, code(data)) == (status, expected)
    assert engine.ended == [SID] and len(guard.poll_budgets) == 0
    assert code(call(guard, "GET", sid=SID)[2]) == "unknown_session"


def overlap(engine: EngineIO, guard: EngineIOGuard, **second: str) -> tuple[int, bytes]:
    """A second GET while a first long-poll is held open inside Engine.IO."""
    engine.hold = True
    first = threading.Thread(target=call, args=(guard, "GET"), kwargs={"sid": SID})
    first.start()
    assert engine.entered.wait(5)
    try:
        status, _, data = call(guard, "GET", sid=SID, **second)
    finally:
        engine.release.set()
        first.join(5)
    return status, data


def test_a_second_long_poll_closes_the_session():
    engine = EngineIO()
    guard = make_guard(engine)
    status, data = overlap(engine, guard)
    assert (status, code(data)) == (400, "transport_overlap")
    assert engine.ended == [SID]


def test_a_poll_naming_websocket_beside_a_long_poll_is_refused_but_ends_nothing():
    """An upgrade whose Connection header a proxy dropped reaches Engine.IO as a poll:
    refused, and the client's session stays (it goes on polling)."""
    engine = EngineIO()
    guard = make_guard(engine)
    status, data = overlap(engine, guard, transport="websocket", http_upgrade="websocket")
    assert (status, code(data)) == (400, "transport_overlap")
    assert engine.ended == [] and SID in engine.sessions


# ---------------------------------------------------------------- budgets of ended sessions

def test_budgets_of_ended_sessions_are_dropped_at_the_next_prune():
    clock, open_ = Clock(0.0), {"a", "b"}
    budgets = SessionBudgets(rate=100, burst=100, clock=clock, alive=open_.__contains__)
    budgets.charge("a", 10)
    budgets.charge("b", 10)
    open_.discard("a")
    clock.now += 11  # past PRUNE_EVERY_SECONDS, well before IDLE_BUDGET_SECONDS
    budgets.charge("b", 10)
    assert len(budgets) == 1
    budgets.forget("b")
    assert len(budgets) == 0
