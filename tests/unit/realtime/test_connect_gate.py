"""The connect gate (utils/realtime/connect_gate.py), without a server."""

from __future__ import annotations

import random
import threading
import time

import pytest
from flask_socketio import ConnectionRefusedError

from utils.realtime.connect_gate import BUSY_CODE, ConnectGate


def refusal_data(excinfo) -> dict:
    message, data = excinfo.value.error_args["message"], excinfo.value.error_args["data"]
    assert message == "unavailable"
    return data


def test_capacity_holders_pass_and_the_next_is_refused_busy_after_the_wait():
    gate = ConnectGate(2, wait=0.2, jitter=random.Random(7))
    with gate.admit(), gate.admit():
        assert gate.in_use == 2
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError) as excinfo, gate.admit():
            pass
        assert 0.15 <= time.monotonic() - started < 1
    data = refusal_data(excinfo)
    assert data["code"] == BUSY_CODE and 1.0 <= data["retry_after"] <= 5.0
    assert gate.in_use == 0 and gate.refused == 1


def test_a_slot_freed_during_the_wait_is_taken():
    gate = ConnectGate(1, wait=2.0)
    holder_in = threading.Event()

    def hold() -> None:
        with gate.admit():
            holder_in.set()
            time.sleep(0.2)

    thread = threading.Thread(target=hold)
    thread.start()
    holder_in.wait(1)
    with gate.admit():
        assert gate.in_use == 1
    thread.join()
    assert gate.refused == 0


def test_a_failure_inside_releases_the_slot():
    gate = ConnectGate(1, wait=0.05)
    with pytest.raises(RuntimeError), gate.admit():
        raise RuntimeError("database")
    with gate.admit():
        pass
    assert gate.in_use == 0


def test_retry_after_is_spread():
    gate = ConnectGate(1, wait=0.0, jitter=random.Random(1))
    seen = set()
    with gate.admit():
        for _ in range(20):
            with pytest.raises(ConnectionRefusedError) as excinfo, gate.admit():
                pass
            seen.add(refusal_data(excinfo)["retry_after"])
    assert len(seen) > 10


def test_a_gate_needs_a_slot():
    with pytest.raises(ValueError):
        ConnectGate(0, wait=1)
