"""Unit tests for the hardening pieces that need no server: what an unsigned session
may send (utils/realtime/admission.py), read budgets (utils/edge/throttle.py), the library patches
(utils/patches/), the expiry heap and the Socket.IO loggers. tests/attacks/ runs
the same defences against real gunicorn servers."""

from __future__ import annotations

import io
import logging
import os

import pytest

from utils.edge.throttle import ByteBudget, SessionBudgets, ThrottledSocket
from utils.ops.logs import configure_logging, socketio_loggers
from utils.patches.eventlet import unmask
from utils.realtime.admission import Admission, AdmissionSweeper, event_problem, message_problem
from utils.realtime.registry import HEAP_SLACK, SocketRegistry


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("data", "signed_in", "problem"), [
    ("0", False, None),
    ('0{"token":"x"}', False, None),
    ('2["mark_read",{}]', False, "a packet before CONNECT"),
    ("1", False, "a packet before CONNECT"),
    ("x" * 30000, False, "a packet before CONNECT"),
    (b"\x00\x01", False, "a binary message"),
    (b"\x00\x01", True, "a binary message"),
    ('51-["x",{"_placeholder":true,"num":0}]', True, "a binary packet"),
    ("61-[]", True, "a binary packet"),
    ('2["mark_read",{"ids":[1]}]', True, None),
    ("1", True, None),
    ('0{"token":"other"}', True, "a second CONNECT"),
])
def test_message_rules(data, signed_in, problem):
    assert message_problem(data, signed_in) == problem


@pytest.mark.parametrize(("data", "problem"), [
    (["mark_read", {"ids": [1]}], None),
    (["unknown_thing"], None),
    (["disconnect"], "a reserved event name"),
    (["connect", None, {"token": "t"}], "a reserved event name"),
    (["connect_error"], "a reserved event name"),
    (["disconnecting"], "a reserved event name"),
    ([], "an event without a name"),
    ([["connect"]], "an event without a name"),
    ({"a": 1}, "an event without a name"),
])
def test_event_rules(data, problem):
    assert event_problem(data) == problem


def test_admission_counts_per_address_and_expires_in_order():
    clock = Clock()
    admission = Admission(timeout=2, per_address=2, clock=clock)
    admission.opened("a", "10.0.0.1")
    assert admission.has_room("10.0.0.1")
    admission.opened("b", "10.0.0.1")
    assert not admission.has_room("10.0.0.1")
    assert admission.has_room("10.0.0.2")
    clock.now += 1
    admission.opened("c", "10.0.0.2")
    admission.settled("a")  # signed in
    assert admission.has_room("10.0.0.1")
    assert admission.overdue() == []
    clock.now += 1.5
    assert admission.overdue() == ["b"]
    clock.now += 1
    assert admission.overdue() == ["c"]
    assert len(admission) == 0 and admission.has_room("10.0.0.2")


def test_admission_reopened_session_gets_a_fresh_deadline():
    clock = Clock()
    admission = Admission(timeout=2, per_address=5, clock=clock)
    admission.opened("a", "ip")
    admission.opened("b", "ip")
    clock.now += 1.5
    admission.opened("a", "ip")  # signed out again: a new deadline, counted once
    clock.now += 1
    assert admission.overdue() == ["b"]
    assert len(admission) == 1


def test_admission_cap_zero_means_off():
    admission = Admission(timeout=2, per_address=0)
    for n in range(100):
        admission.opened(str(n), "ip")
    assert admission.has_room("ip")


def test_sweeper_closes_overdue_sessions_that_never_signed_in():
    clock = Clock()
    admission = Admission(timeout=1, per_address=5, clock=clock)
    closed: list[str] = []
    signed = {"b"}
    sweeper = AdmissionSweeper(admission, closed.append, signed.__contains__,
                               lambda f: None, lambda s: None)
    admission.opened("a", "ip")
    admission.opened("b", "ip")  # signed in, its settle not yet booked
    assert sweeper.sweep_once() == 0
    clock.now += 2
    assert sweeper.sweep_once() == 1
    assert closed == ["a"]


def test_byte_budget_allows_a_burst_then_asks_to_wait():
    budget = ByteBudget(rate=1000, burst=2000, now=0.0)
    assert budget.spend(1500, 0.0) == 0
    assert budget.spend(500, 0.0) == 0
    assert budget.spend(1000, 0.0) == pytest.approx(1.0)
    assert budget.spend(0, 3.0) == 0  # refilled, capped at the burst
    assert budget.tokens == 2000


def test_throttled_socket_sleeps_once_over_budget():
    class Fake:
        def __init__(self):
            self.sent = b""

        def recv(self, n):
            return b"x" * n

        def sendall(self, data):
            self.sent += data

    clock, slept = Clock(0.0), []
    fake = Fake()
    sock = ThrottledSocket(fake, ByteBudget(100, 200, 0.0), slept.append, clock)
    assert sock.recv(150) == b"x" * 150 and slept == []
    sock.recv(150)
    assert slept == [pytest.approx(1.0)]
    sock.sendall(b"hi")  # everything else passes through
    assert fake.sent == b"hi"


def test_session_budgets_are_per_session_and_forgotten_when_idle():
    clock = Clock(0.0)
    budgets = SessionBudgets(rate=100, burst=100, clock=clock)
    assert budgets.charge("a", 100) == 0
    assert budgets.charge("a", 100) == pytest.approx(1.0)
    assert budgets.charge("b", 100) == 0
    clock.now += 120
    budgets.charge("c", 1)
    assert len(budgets) == 1


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 127, 4096, 32771])
def test_unmask_matches_rfc6455(length):
    data, mask = os.urandom(length + 2), tuple(os.urandom(4))
    for offset in range(4):
        expected = bytes(data[i] ^ mask[(offset + i) % 4] for i in range(length))
        assert unmask(data, mask, length, offset) == expected
    assert unmask(data, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_expiry_heap_does_not_keep_sockets_that_left():
    registry = SocketRegistry()
    registry.add("stays", "alice", 10_000.0)
    for n in range(20_000):
        registry.add(f"s{n}", "bob", 10_000.0 + n)
        registry.remove(f"s{n}")
    assert registry.expiry_entries() <= 2 * len(registry) + HEAP_SLACK + 1
    assert registry.pop_expired(1e9) == ["stays"]


def test_socketio_loggers_have_no_handler_of_their_own():
    for name in ("socketio.server", "engineio.server"):
        logging.getLogger(name).addHandler(logging.StreamHandler())  # as the libraries do
    configure_logging("INFO", ["super-secret-api-key"])
    for enabled, level in ((False, logging.ERROR), (True, logging.INFO)):
        sio, eio = socketio_loggers(enabled)
        for logger in (sio, eio):
            assert isinstance(logger, logging.Logger)
            assert logger.handlers == [] and logger.propagate and logger.level == level
    root_handler = next(h for h in logging.getLogger().handlers if getattr(h, "_notifier", 0))
    stream = io.StringIO()
    previous = root_handler.setStream(stream)
    try:
        eio.error("origin super-secret-api-key sid=token=abc123secret")
    finally:
        root_handler.setStream(previous)
    line = stream.getvalue()
    assert "engineio.server" in line and "[redacted]" in line
    assert "super-secret-api-key" not in line and "abc123secret" not in line
