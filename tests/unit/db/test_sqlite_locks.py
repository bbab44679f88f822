"""SQLite's write lock must not hold the whole worker: while another process holds
it, the one eventlet (or gevent) worker keeps answering everyone, reads go on, and
a write waits cooperatively, then succeeds once the lock goes or answers 503.

The real-server test runs both gunicorn workers. The in-process tests run the app as
a hub process does (sqlite3 does not wait in C) and check the retry itself: the
whole unit is redone, nothing is stored twice, the deadline gives 503, and without
contention not one statement is added."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from tests.support.app import build_app
from tests.support.servers import gunicorn, migrate, mint, post, server_env
from utils.db import sqlite_locks

HOLD_SECONDS = 3.0  # how long the other process keeps the write lock
HEALTHZ_EVERY = 0.1  # seconds between /healthz probes
HEALTHZ_LIMIT = 1.0  # the slowest /healthz allowed while the lock is held
READ_LIMIT = 1.0  # a socket read (sync, connect) during the lock
AFTER_RELEASE = 1.0  # a write made during the lock answers this soon after it goes


def sqlite_now() -> str:
    """A timestamp as SQLAlchemy stores DateTime in SQLite (naive UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_a_notification(connection: sqlite3.Connection, user_id: str = "lock-holder",
                          title: str = "held") -> int:
    return connection.execute(
        "INSERT INTO notifications (user_id, type, title, data, created_at) "
        "VALUES (?, 't', ?, '{}', ?)", (user_id, title, sqlite_now())).lastrowid


class WriteLockHolder:
    """Another process's writer, as `flask prune` is: a sqlite3 connection in
    BEGIN IMMEDIATE, some writes (``work``), a sleep, a commit (on its own thread)."""

    def __init__(self, path: Path, seconds: float, work=insert_a_notification) -> None:
        self.path, self.seconds, self.work = path, seconds, work
        self.held = threading.Event()
        self.released_at: float | None = None
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            connection.execute("BEGIN IMMEDIATE")
            self.work(connection)
            self.held.set()
            time.sleep(self.seconds)
            connection.execute("COMMIT")
            self.released_at = time.monotonic()
        finally:
            connection.close()

    def __enter__(self) -> WriteLockHolder:
        self._thread.start()
        assert self.held.wait(10), "could not take the write lock"
        return self

    def __exit__(self, *_exc) -> None:
        self._thread.join(self.seconds + 10)


def in_background(results: dict, name: str, call) -> threading.Thread:
    """Run ``call`` on a thread; ``results[name]`` gets (answer, seconds taken, when
    it finished on the monotonic clock)."""
    def run():
        started = time.monotonic()
        answer = call()
        finished = time.monotonic()
        results[name] = (answer, finished - started, finished)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module", params=["eventlet", "gevent"])
def server(request, tmp_path_factory):
    worker = request.param
    tmp = tmp_path_factory.mktemp(f"sqlite-locks-{worker}")
    env = server_env(tmp, ASYNC_MODE=worker)
    migrate(env)
    proc = gunicorn(tmp, env, worker=worker, extra=["--access-logfile", "-"],
                    name="sqlite-locks").start()
    proc.worker = worker
    proc.database = tmp / "server.db"
    yield proc
    proc.stop()


@pytest.mark.server
def test_a_held_sqlite_write_lock_does_not_freeze_the_worker(server, clients):
    bob = clients().connect(server.url, auth={"token": mint("lock-bob")},
                            transports=["websocket"])
    bob.wait_for("auth_success")
    alice_token = mint("lock-alice")
    results: dict = {}
    healthz: list[float] = []
    with WriteLockHolder(server.database, HOLD_SECONDS) as lock:
        threads = [
            in_background(results, "producer", lambda: post(
                server, {"user_id": "lock-alice", "type": "t", "title": "during the lock"},
                **{"Idempotency-Key": f"lock-{server.worker}"})),
            in_background(results, "mark_read", lambda: requests.post(
                server.url + "/api/notifications/read", json={"all": True}, timeout=30,
                headers={"Authorization": f"Bearer {alice_token}"})),
            in_background(results, "for_bob", lambda: post(
                server, {"user_id": "lock-bob", "type": "t", "title": "round trip"})),
        ]
        time.sleep(0.3)  # the writes are now waiting for the lock
        in_background(results, "sync", lambda: bob.client.call(
            "sync", {"after_id": 0}, timeout=10))
        in_background(results, "inbox", lambda: requests.get(
            server.url + "/api/notifications", timeout=10,
            headers={"Authorization": f"Bearer {alice_token}"}))
        in_background(results, "connect", lambda: clients().connect(
            server.url, auth={"token": mint("lock-carol"), "last_id": 0},
            transports=["websocket"]).wait_for("sync_complete"))
        while lock.released_at is None:
            started = time.monotonic()
            assert requests.get(server.url + "/healthz", timeout=30).status_code == 200
            healthz.append(time.monotonic() - started)
            time.sleep(HEALTHZ_EVERY)
    for thread in threads:
        thread.join(sqlite_locks.WRITE_DEADLINE_SECONDS + 5)

    worst = max(healthz)
    print(f"{server.worker}: {len(healthz)} /healthz during a {HOLD_SECONDS:.0f} s lock, "
          f"worst {worst * 1000:.0f} ms")
    assert worst < HEALTHZ_LIMIT, f"/healthz took {worst:.2f}s while SQLite was locked"
    assert results["sync"][1] < READ_LIMIT and "notifications" in results["sync"][0]
    assert results["connect"][1] < READ_LIMIT
    assert results["inbox"][0].status_code == 200 and results["inbox"][1] < READ_LIMIT

    # Each write either waited for the lock and then succeeded, or gave up with 503.
    for name, success in (("producer", 201), ("mark_read", 200), ("for_bob", 201)):
        response, took, answered = results[name]
        assert response.status_code in (success, 503), (name, response.text)
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "database_unavailable"
            assert took < sqlite_locks.WRITE_DEADLINE_SECONDS + 2
        else:
            assert took > HOLD_SECONDS / 2, f"{name} should have waited for the lock"
            assert answered - lock.released_at < AFTER_RELEASE, name
    if results["producer"][0].status_code == 201:
        inbox = requests.get(server.url + "/api/notifications", timeout=5,
                             headers={"Authorization": f"Bearer {alice_token}"}).json()
        titles = [n["title"] for n in inbox["notifications"]]
        assert titles.count("during the lock") == 1, "stored twice (or not at all)"
    if results["for_bob"][0].status_code == 201:
        delivered = bob.wait_for("notification", timeout=5)
        assert [n["title"] for n in delivered] == ["round trip"]
    output = server.output()
    assert "Traceback" not in output
    assert '" 500 ' not in output


# In-process: the app as a process with a hub runs it (sqlite3 never waits in C),
# on threads; time.sleep is then a real sleep, which changes nothing here.

SHORT_DEADLINE = 0.3  # seconds, in place of WRITE_DEADLINE_SECONDS
SHORT_HOLD = 0.6  # a lock the retry outlasts
LONG_HOLD = 1.5  # a lock that outlasts SHORT_DEADLINE


@pytest.fixture
def app(tmp_path, monkeypatch):
    """Overrides conftest's app (and so client, sio_client, make_token, notify)."""
    monkeypatch.setattr(sqlite_locks, "runs_a_hub", lambda: True)
    return build_app(tmp_path)


@pytest.fixture
def database(app) -> Path:
    return Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))


def unread(app, user_id: str) -> int:
    from utils.notifications import store

    with app.app_context():
        return store.unread_count(user_id)


def test_sqlite3_waits_in_c_only_where_no_hub_runs(monkeypatch):
    from utils.db.engine import engine_options as _engine_options

    monkeypatch.setattr(sqlite_locks, "runs_a_hub", lambda: False)
    assert _engine_options("sqlite:///x.db")["connect_args"]["timeout"] == \
        sqlite_locks.WRITE_DEADLINE_SECONDS  # the CLI, migrations: blocking is harmless
    monkeypatch.setattr(sqlite_locks, "runs_a_hub", lambda: True)
    assert _engine_options("sqlite:///x.db")["connect_args"]["timeout"] == 0
    assert "connect_args" not in _engine_options("postgresql+pg8000://u@h/d")


def test_without_contention_the_producer_path_runs_no_extra_statement(app):
    """Every statement sqlite3 runs, those on the driver's own cursor included (the
    recipients' preferences are read there: utils/notifications/preferences.py)."""
    from utils.extensions import db
    from utils.notifications.notifier import notify_users

    statements: list[str] = []

    def trace(dbapi_connection, _record, _proxy) -> None:
        dbapi_connection.set_trace_callback(
            lambda sql: statements.append(" ".join(sql.split()[:3])))

    with app.app_context():
        db.engine.dispose()  # every connection from here on is checked out, so traced
        sa.event.listen(db.engine, "checkout", trace)
        notify_users(["alice"], "t", "x")
        # One read of the recipients' preferences (issue 23), then the insert, in the
        # group commit's transaction.
        assert [s for s in statements if s.split()[0] in ("SELECT", "INSERT")] == [
            "SELECT user_id, settings,", "INSERT INTO notifications"]
        statements.clear()
        notify_users(["alice"], "t", "x", idempotency_key="k", request_fingerprint="f")
        assert [s for s in statements if s.startswith("INSERT")] == [
            "INSERT INTO notifications", "INSERT INTO idempotency_keys"]
        # and the SELECTs of the key and of the preferences
        assert len([s for s in statements if s.startswith("SELECT")]) == 2


def test_a_post_during_a_held_lock_waits_then_stores_once(app, client, api_headers,
                                                          database):
    body = {"user_id": "alice", "type": "t", "title": "waited"}
    headers = {**api_headers, "Idempotency-Key": "wait-once"}
    with WriteLockHolder(database, SHORT_HOLD):
        started = time.monotonic()
        first = client.post("/api/notifications", json=body, headers=headers)
        took = time.monotonic() - started
    assert first.status_code == 201, first.get_json()
    assert took >= SHORT_HOLD * 0.7, "it should have waited for the lock"
    again = client.post("/api/notifications", json=body, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json() == first.get_json()
    assert unread(app, "alice") == 1


def test_a_duplicate_committed_while_waiting_is_answered_not_stored_again(
        app, client, api_headers, database):
    """Another process stores the same Idempotency-Key while this request waits: the
    retry redoes the whole unit, the key lookup included, and replays its answer."""
    from utils.notifications.notifier import fingerprint

    body = {"user_id": "alice", "type": "t", "title": "duplicate"}
    answer: dict = {}

    def the_other_process_stores_it(connection):
        nid = insert_a_notification(connection, "alice", "duplicate")
        answer.update({"notifications": [{"id": nid, "user_id": "alice"}]})
        connection.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, response, created_at) "
            "VALUES ('dup', ?, ?, ?)", (fingerprint(body), json.dumps(answer), sqlite_now()))

    with WriteLockHolder(database, SHORT_HOLD, the_other_process_stores_it):
        response = client.post("/api/notifications", json=body,
                               headers={**api_headers, "Idempotency-Key": "dup"})
    assert response.status_code == 201
    assert response.headers.get("Idempotent-Replayed") == "true"
    assert response.get_json() == answer
    assert unread(app, "alice") == 1


def test_past_the_deadline_a_write_answers_503_and_stores_nothing(
        app, client, api_headers, make_token, database, monkeypatch):
    monkeypatch.setattr(sqlite_locks, "WRITE_DEADLINE_SECONDS", SHORT_DEADLINE)
    user = {"Authorization": f"Bearer {make_token('alice')}"}
    with WriteLockHolder(database, LONG_HOLD):
        started = time.monotonic()
        stored = client.post("/api/notifications", headers=api_headers,
                             json={"user_id": "alice", "type": "t", "title": "late"})
        took = time.monotonic() - started
        marked = client.post("/api/notifications/read", json={"all": True}, headers=user)
    for response in (stored, marked):
        assert response.status_code == 503
        assert response.get_json() == {"error": {
            "code": "database_unavailable",
            "message": "the database is unavailable; retry later"}}
        assert "Retry-After" in response.headers
    assert SHORT_DEADLINE <= took < SHORT_DEADLINE + 0.5
    assert unread(app, "alice") == 0


def test_a_socket_write_past_the_deadline_acks_database_unavailable(
        app, sio_client, make_token, notify, database, monkeypatch):
    notify("alice")
    monkeypatch.setattr(sqlite_locks, "WRITE_DEADLINE_SECONDS", SHORT_DEADLINE)
    socket = sio_client(auth={"token": make_token("alice")})
    with WriteLockHolder(database, LONG_HOLD):
        ack = socket.emit("mark_read", {"all": True}, callback=True)
    assert ack["error"]["code"] == "database_unavailable"
    assert socket.is_connected()
    assert socket.emit("mark_read", {"all": True}, callback=True) == {
        "updated": 1, "unread_count": 0}


def test_mark_read_and_prune_wait_for_the_lock(app, client, make_token, notify, database):
    from utils.notifications import store
    from utils.notifications.notifier import IDEMPOTENCY_TTL

    ids = notify("alice") + notify("alice")
    with WriteLockHolder(database, SHORT_HOLD):
        marked = client.post("/api/notifications/read", json={"ids": ids[:1]},
                             headers={"Authorization": f"Bearer {make_token('alice')}"})
    assert marked.status_code == 200 and marked.get_json()["updated"] == 1
    with WriteLockHolder(database, SHORT_HOLD), app.app_context():
        started = time.monotonic()
        # alice's two and the rows both holders inserted
        assert store.prune(timedelta(days=0), IDEMPOTENCY_TTL) == 4
        assert time.monotonic() - started >= SHORT_HOLD * 0.7
    assert unread(app, "alice") == 0


def test_reads_do_not_wait_for_a_writer(app, client, make_token, notify, database):
    notify("alice")
    user = {"Authorization": f"Bearer {make_token('alice')}"}
    with WriteLockHolder(database, LONG_HOLD):
        started = time.monotonic()
        inbox = client.get("/api/notifications", headers=user)
        count = client.get("/api/notifications/unread-count", headers=user)
        took = time.monotonic() - started
    assert inbox.status_code == 200 and count.get_json() == {"unread_count": 1}
    assert took < READ_LIMIT / 4


def test_other_database_errors_are_not_retried():
    calls = []

    @sqlite_locks.retry_when_locked
    def unit():
        calls.append(1)
        raise OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: x"))

    with pytest.raises(OperationalError):
        unit()
    assert calls == [1]
