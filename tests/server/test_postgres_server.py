"""A real gunicorn eventlet server on PostgreSQL: the same code and migrations, a
driver that yields to the hub, and the replay race where greenthreads interleave."""

from __future__ import annotations

import threading
import time

import pg8000.native
import pytest
import requests

from tests.support.servers import gunicorn, migrate, mint, notify, post, server_env
from tests.support.services import PG_HOST, PG_PORT

pytestmark = [pytest.mark.server, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_server(postgres_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pg-server")
    # postgres:// as Railway's plugin hands it out.
    env = server_env(tmp, DATABASE_URL=postgres_url.replace("postgresql://", "postgres://"))
    migrate(env)
    proc = gunicorn(tmp, env, worker="eventlet").start()
    proc.database = postgres_url.rsplit("/", 1)[1]
    yield proc
    proc.stop()


def test_migrations_created_the_schema_on_postgres(pg_server):
    conn = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                    database=pg_server.database)
    tables = {row[0] for row in conn.run(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    conn.close()
    assert {"notifications", "idempotency_keys", "watermarks", "alembic_version"} <= tables
    ready = requests.get(pg_server.url + "/readyz", timeout=5).json()
    assert ready["database"] == "ok"


def test_a_blocked_database_call_does_not_freeze_the_worker(pg_server, clients):
    """One request waits on PostgreSQL (a lock held by the test while it runs
    pg_sleep); another user's notification is still stored and delivered promptly."""
    bob = clients().connect(pg_server.url, auth={"token": mint("pg-bob")},
                            transports=["websocket"])
    bob.wait_for("auth_success")
    blocker = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                       database=pg_server.database)
    results: dict[str, object] = {}
    try:
        blocker.run("BEGIN")
        blocker.run("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE")

        def slow_request():
            started = time.monotonic()
            response = post(pg_server, {"user_id": "pg-alice", "type": "t", "title": "slow"},
                            **{"Idempotency-Key": "held-by-lock"})
            results["slow"] = (response.status_code, time.monotonic() - started)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.5)  # the slow request is now waiting on the lock
        started = time.monotonic()
        notify(pg_server, "pg-bob", title="prompt")
        delivered = bob.wait_for("notification", timeout=5)
        elapsed = time.monotonic() - started
        assert delivered[0]["title"] == "prompt"
        assert elapsed < 1.0, f"delivery took {elapsed:.2f}s while a query was blocked"
        assert "slow" not in results, "the slow request should still be waiting"
        blocker.run("SELECT pg_sleep(1)")
    finally:
        blocker.run("ROLLBACK")
        blocker.close()
    thread.join(timeout=15)
    status, took = results["slow"]
    assert status == 201
    assert took >= 1.5


def test_concurrent_producer_during_replay_delivers_each_once_in_order(pg_server, clients):
    """A producer posts as fast as it can while sockets connect and replay: each
    socket must see every id after its last_id exactly once, in increasing order.
    Each socket's last_id trails the newest id by about 20, so the replay always
    overlaps live emits and stays under the cap of 100."""
    user = "racer"
    base = notify(pg_server, user)
    produced: list[int] = [base]

    def producer():
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and len(produced) < 500:
            produced.append(notify(pg_server, user, title="live"))

    thread = threading.Thread(target=producer)
    thread.start()
    sockets = []
    try:
        while thread.is_alive() and len(sockets) < 12:
            last_id = max(base, produced[-1] - 20)
            recorder = clients().connect(
                pg_server.url, auth={"token": mint(user), "last_id": last_id},
                transports=["websocket"] if len(sockets) % 2 else ["polling"])
            sockets.append((last_id, recorder))
    finally:
        thread.join()
    final = produced[-1]
    assert len(sockets) >= 4
    for last_id, recorder in sockets:
        recorder.wait_for("sync_complete")
        deadline = time.monotonic() + 10
        while (not recorder.of("notification") or recorder.of("notification")[-1]["id"] < final) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorder.of("sync_complete")[0]["has_more"] is False
        ids = [n["id"] for n in recorder.of("notification")]
        assert ids == sorted(set(ids)), "duplicates or out of order"
        assert ids == list(range(last_id + 1, final + 1)), "a notification was lost"


@pytest.mark.parametrize("worker", ["eventlet", "gevent"])
def test_a_database_never_migrated_is_not_ready_and_says_how_to_fix_it(fresh_database,
                                                                         tmp_path, worker):
    """Issue 24, finding 2: the Procfile's gunicorn on a fresh PostgreSQL database,
    without `flask db upgrade`. /readyz is 503 with the reason, a producer's POST is
    database_not_migrated (not "retry later"), and the start log says it in one line."""
    env = server_env(tmp_path, DATABASE_URL=fresh_database(), ASYNC_MODE=worker)
    server = gunicorn(tmp_path, env, worker=worker).start()
    try:
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["schema"] == "behind"
        assert "run `flask db upgrade`" in ready.json()["reason"]
        response = post(server, {"user_id": "a", "type": "t", "title": "x"})
        assert response.status_code == 503 and "Retry-After" not in response.headers
        assert response.json()["error"]["code"] == "database_not_migrated"
        lines = [line for line in server.output().splitlines()
                 if "the database schema is not migrated" in line]
        assert len(lines) == 1, server.output()
        # Migrated, the same server is ready at once.
        migrate(env)
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    finally:
        server.stop()
