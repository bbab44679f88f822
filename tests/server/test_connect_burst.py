"""A connect burst while the database stalls: the connect path holds at most its
share of the pool, and the connects beyond it are refused ``server_busy`` with a
retry hint, never left to time out on the pool (issue 20: 540 "QueuePool limit"
errors in one soak run, each a failed connect whose client came straight back).

Real gunicorn on both workers and PostgreSQL; the test stalls the database by
holding an exclusive lock on the notifications table, which every connect reads."""

from __future__ import annotations

import threading
import time
import uuid

import pg8000.native
import pytest
import requests
import socketio

from tests.support.servers import gunicorn, migrate, mint, server_env
from tests.support.services import PG_HOST, PG_PORT
from utils.db.engine import CONNECT_SLOTS, MAX_OVERFLOW, POOL_SIZE

pytestmark = [pytest.mark.server, pytest.mark.postgres, pytest.mark.slow]

BURST = 40
ORIGIN = "http://localhost:3000"


@pytest.fixture(params=["eventlet", "gevent"])
def pg_node(request, postgres_url, tmp_path):
    env = server_env(tmp_path, DATABASE_URL=postgres_url, CONNECT_RATE_PER_IP="0",
                     MAX_PENDING_SESSIONS_PER_IP="0", CONNECT_TIMEOUT="10",
                     ASYNC_MODE=request.param)
    migrate(env)
    proc = gunicorn(tmp_path, env, worker=request.param).start()
    proc.database = postgres_url.rsplit("/", 1)[1]
    yield proc
    proc.stop()


class Attempt(threading.Thread):
    def __init__(self, url: str, user_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.user_id = url, user_id
        self.client = socketio.Client(reconnection=False,
                                      websocket_extra_options={"suppress_origin": True})
        self.refusal = None
        self.welcome = threading.Event()
        self.client.on("connect_error", self._refused)
        self.client.on("auth_success", lambda data: self.welcome.set())

    def _refused(self, data=None) -> None:
        self.refusal = data

    def run(self) -> None:
        try:
            self.client.connect(self.url, auth={"token": mint(self.user_id), "last_id": 0},
                                headers={"Origin": ORIGIN}, transports=["websocket"],
                                wait_timeout=20)
        except socketio.exceptions.ConnectionError:
            pass

    def close(self) -> None:
        try:
            self.client.disconnect()
        except Exception:
            pass


def test_a_burst_on_a_stalled_database_is_refused_busy_not_drained_from_the_pool(pg_node):
    assert CONNECT_SLOTS["postgresql"] < POOL_SIZE + MAX_OVERFLOW
    blocker = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                       database=pg_node.database)
    attempts = [Attempt(pg_node.url, f"burst-{uuid.uuid4().hex[:8]}-{i}") for i in range(BURST)]
    try:
        blocker.run("BEGIN")
        blocker.run("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        for attempt in attempts:
            attempt.start()
        # Past the gate's wait (half of CONNECT_TIMEOUT): the ones without a slot are
        # refused, while the pool still has connections for everything else.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and \
                sum(a.refusal is not None for a in attempts) < BURST - CONNECT_SLOTS["postgresql"]:
            time.sleep(0.2)
        started = time.monotonic()
        ready = requests.get(pg_node.url + "/readyz", timeout=10)
        readyz_seconds = time.monotonic() - started
    finally:
        blocker.run("ROLLBACK")
        blocker.close()
    try:
        refused = [a.refusal for a in attempts if a.refusal is not None]
        assert len(refused) == BURST - CONNECT_SLOTS["postgresql"], refused
        assert all(r["data"]["code"] == "server_busy" and 1 <= r["data"]["retry_after"] <= 5
                   for r in refused), refused
        assert len({r["data"]["retry_after"] for r in refused}) > 1  # spread, not one moment
        assert ready.status_code == 200 and readyz_seconds < 2, (ready.text, readyz_seconds)
        # The ones holding a slot finish once the lock goes; the refused come back.
        admitted = [a for a in attempts if a.refusal is None]
        assert all(a.welcome.wait(10) for a in admitted)
        again = [Attempt(pg_node.url, a.user_id) for a in attempts if a.refusal is not None]
        for attempt in again:
            attempt.start()
        assert all(a.welcome.wait(15) for a in again), [a.refusal for a in again]
        attempts += again
        log = pg_node.output()
        assert "QueuePool limit" not in log and "Traceback" not in log, log[-3000:]
    finally:
        for attempt in attempts:
            attempt.close()
