"""The transactional outbox end to end: real gunicorn (eventlet and gevent workers),
real PostgreSQL (a fresh database per test, migrated as a deploy migrates it), real
Socket.IO clients. Producers write rows in their own transactions; the notifier's
consumer delivers what committed, once.

PUSH_AFTER is an hour here: the delivery check's redelivery (a second emit of a
notification no receipt acknowledged) would otherwise blur "delivered once".
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pg8000.native
import pytest
import requests
import sqlalchemy as sa
from notify_client import enqueue
from sqlalchemy.orm import Session

from tests.support.servers import gunicorn, migrate, mint, refused_start, server_env
from tests.support.services import PG_HOST, PG_PORT

pytestmark = [pytest.mark.server, pytest.mark.postgres]

POLL = 4.0  # OUTBOX_POLL_SECONDS: long, so a delivery well under it is LISTEN's doing
WOKEN = 1.5  # a NOTIFY-woken delivery arrives within this (it takes a few ms)


def outbox_env(tmp, url: str, worker: str, **overrides: str) -> dict[str, str]:
    return server_env(tmp, DATABASE_URL=url, ASYNC_MODE=worker, OUTBOX_ENABLED="1",
                      OUTBOX_POLL_SECONDS=str(POLL), PUSH_AFTER="3600", **overrides)


@pytest.fixture
def start(tmp_path, fresh_database):
    """``start(worker, url=None, name=..., **env)``: a migrated outbox database (a new
    one unless ``url``) and a gunicorn server consuming it; stopped at teardown."""
    servers = []

    def _start(worker: str, url: str | None = None, name: str = "gunicorn", **env):
        url = url or fresh_database()
        environ = outbox_env(tmp_path, url, worker, **env)
        migrate(environ)
        server = gunicorn(tmp_path, environ, worker=worker, name=name)
        servers.append(server)
        server.start()
        server.database_url = url
        return server

    yield _start
    for server in servers:
        server.stop()


class Producer:
    """A producer's own database connection."""

    def __init__(self, url: str) -> None:
        self.conn = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                             database=url.rsplit("/", 1)[1])

    def insert(self, *payloads: object, commit: bool = True) -> None:
        self.conn.run("BEGIN")
        for payload in payloads:
            self.conn.run("INSERT INTO notification_outbox (payload) "
                          "VALUES (CAST(:p AS jsonb))", p=json.dumps(payload))
        self.conn.run("COMMIT" if commit else "ROLLBACK")

    def insert_many(self, user: str, count: int, prefix: str) -> None:
        """``count`` rows in one statement and one transaction, titles prefix-1..N."""
        self.conn.run(
            "INSERT INTO notification_outbox (payload) SELECT jsonb_build_object("
            "'user_id', CAST(:u AS text), 'type', 'bulk', 'title', CAST(:p AS text) || g) "
            "FROM generate_series(1, CAST(:n AS int)) AS g", u=user, p=prefix, n=count)

    def scalar(self, sql: str, **params):
        return self.conn.run(sql, **params)[0][0]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def producers():
    made: list[Producer] = []

    def _make(url: str) -> Producer:
        made.append(Producer(url))
        return made[-1]

    yield _make
    for producer in made:
        producer.close()


def note(user: str, title: str, **fields) -> dict:
    return {"user_id": user, "type": "outbox", "title": title, **fields}


def connect(clients, server, user: str, last_id: int | None = None):
    auth = {"token": mint(user)}
    if last_id is not None:
        auth["last_id"] = last_id
    recorder = clients().connect(server.url, auth=auth, transports=["websocket"])
    recorder.wait_for("auth_success")
    return recorder


def titles(recorder) -> list[str]:
    return [n["title"] for n in recorder.of("notification")]


def page_the_rest(recorder) -> list[str]:
    """A replay carries at most 100 rows; with ``has_more`` a client pages on with
    ``sync`` from the cursor, as the reference client does. The titles it fetched."""
    done = recorder.wait_for("sync_complete")[0]
    fetched, cursor, more = [], done["last_id"], done["has_more"]
    for _ in range(200):  # bounded: pages of 100, and the waits between them
        if not more:
            return fetched
        page = recorder.client.call("sync", {"after_id": cursor, "limit": 100}, timeout=10)
        if page.get("error", {}).get("code") == "rate_limited":  # the socket's event budget
            time.sleep(0.5)
            continue
        fetched += [n["title"] for n in page["notifications"]]
        cursor = page["notifications"][-1]["id"] if page["notifications"] else cursor
        more = page["has_more"]
    raise AssertionError("sync never reached the end")


def wait_for_titles(recorders, expected: set[str], timeout: float = 60,
                    synced: list[str] = ()) -> list[str]:
    """Every title received live by ``recorders``, once all of ``expected`` arrived
    (live, or among ``synced``)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [t for r in recorders for t in titles(r)]
        if expected <= set(got) | set(synced):
            return got
        if time.monotonic() > deadline:
            missing = sorted(expected - set(got))
            raise AssertionError(f"{len(missing)} never arrived, e.g. {missing[:5]}")
        time.sleep(0.05)


def listener_pids(producer: Producer) -> list[int]:
    return [r[0] for r in producer.conn.run(
        "SELECT pid FROM pg_stat_activity WHERE application_name = "
        "'notifier outbox listener' AND datname = current_database()")]


def wait_for_listeners(producer: Producer, count: int = 1, exclude: tuple[int, ...] = (),
                       timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in listener_pids(producer) if p not in exclude]
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} LISTEN connections after {timeout}s")


def metric(server, name: str) -> float:
    body = requests.get(server.url + "/metrics", timeout=5).text
    values = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
              if line.startswith(name + "{") or line.startswith(name + " ")]
    assert values, f"{name} is not exposed"
    return sum(values)


# -- the producer's transaction ----------------------------------------------------------

def test_a_rolled_back_producer_transaction_delivers_nothing(start, producers, clients,
                                                             worker):
    server = start(worker)
    producer = producers(server.database_url)
    alice = connect(clients, server, "alice")
    wait_for_listeners(producer)
    producer.insert(note("alice", "rolled back"), commit=False)
    producer.insert(note("alice", "committed after it"))
    wait_for_titles([alice], {"committed after it"})
    time.sleep(POLL + 0.5)  # a poll has run since: nothing else was there to find
    assert titles(alice) == ["committed after it"]
    assert producer.scalar("SELECT count(*) FROM notifications") == 1
    assert producer.scalar("SELECT count(*) FROM notification_outbox") == 0


def test_a_committed_row_is_delivered_once_at_the_commits_notify(start, producers,
                                                                  clients, worker):
    """Through the Python client's helper, in a SQLAlchemy session of the producer's
    own, with another write of its transaction."""
    server = start(worker)
    producer = producers(server.database_url)
    alice = connect(clients, server, "alice")
    wait_for_listeners(producer)
    engine = sa.create_engine(server.database_url.replace("postgresql://",
                                                          "postgresql+pg8000://"))
    try:
        with Session(engine) as session, session.begin():
            session.execute(sa.text("CREATE TABLE comments (id serial PRIMARY KEY, body text)"))
            session.execute(sa.text("INSERT INTO comments (body) VALUES ('nice')"))
            enqueue(session, note("alice", "new comment", data={"comment": 1}))
            committed = time.monotonic()
        wait_for_titles([alice], {"new comment"}, timeout=10)
        took = time.monotonic() - committed
    finally:
        engine.dispose()
    assert took < WOKEN, f"{took:.2f}s: the NOTIFY did not wake the consumer"
    time.sleep(POLL + 0.5)
    received = alice.of("notification")
    assert [(n["title"], n["data"]) for n in received] == [("new comment", {"comment": 1})]
    assert producer.scalar("SELECT count(*) FROM notifications") == 1
    assert producer.scalar("SELECT count(*) FROM notification_outbox") == 0
    assert metric(server, "notifier_outbox_rows_consumed_total") == 1
    assert metric(server, "notifier_outbox_lag_seconds") == 0


# -- crashes and several consumers -------------------------------------------------------

def test_a_worker_killed_mid_batch_delivers_each_row_once_after_the_restart(
        start, producers, clients, worker):
    total = 4000
    server = start(worker, OUTBOX_BATCH_SIZE="40")
    producer = producers(server.database_url)
    before = connect(clients, server, "bulk")
    wait_for_listeners(producer)
    (old_worker,) = server.worker_pids()
    producer.insert_many("bulk", total, "n")
    before.wait_for("notification", timeout=10)
    os.kill(old_worker, signal.SIGKILL)  # that worker alone: the master starts another
    left = producer.scalar("SELECT count(*) FROM notification_outbox")
    assert 0 < left < total, f"{left} rows left: the kill was not mid-stream"
    deadline = time.monotonic() + 30
    while not [p for p in server.worker_pids() if p != old_worker]:
        assert time.monotonic() < deadline, "no new worker"
        time.sleep(0.1)
    server.wait_ready()
    seen = [n["id"] for n in before.of("notification")]
    after = connect(clients, server, "bulk", last_id=max(seen))
    # The new worker may have stored more than one replay's 100 rows before this
    # connect: the rest come by sync (a page may also hold rows emitted live since).
    synced = page_the_rest(after)
    expected = {f"n{i}" for i in range(1, total + 1)}
    got = wait_for_titles([before, after], expected, timeout=90, synced=synced)
    duplicates = [t for t, c in Counter(got).items() if c > 1]
    assert duplicates == [], f"emitted twice: {duplicates[:5]}"
    assert producer.scalar("SELECT count(*) FROM notifications") == total
    assert producer.scalar("SELECT count(DISTINCT title) FROM notifications") == total
    assert producer.scalar("SELECT count(*) FROM notification_outbox") == 0
    assert producer.scalar("SELECT count(*) FROM notification_outbox_dead") == 0


def test_two_nodes_consuming_one_outbox_store_and_emit_each_row_once(
        start, producers, clients, fresh_database):
    """An eventlet node and a gevent node on one database, no Redis: each emits only
    to its own sockets, so with the user connected to both, a row consumed twice
    would arrive twice."""
    url = fresh_database()
    first = start("eventlet", url=url, name="node-a", OUTBOX_BATCH_SIZE="10")
    second = start("gevent", url=url, name="node-b", OUTBOX_BATCH_SIZE="10")
    producer = producers(url)
    on_first, on_second = connect(clients, first, "shared"), connect(clients, second, "shared")
    wait_for_listeners(producer, count=2)
    total = 0
    for batch in range(30):
        producer.insert(*[note("shared", f"b{batch}-{i}") for i in range(30)])
        total += 30
        time.sleep(0.01)
    expected = {f"b{b}-{i}" for b in range(30) for i in range(30)}
    got = wait_for_titles([on_first, on_second], expected, timeout=60)
    time.sleep(0.5)
    got = titles(on_first) + titles(on_second)
    assert sorted(got) == sorted(expected), "a row was delivered twice"
    assert producer.scalar("SELECT count(*) FROM notifications") == total
    consumed = [metric(node, "notifier_outbox_rows_consumed_total") for node in (first, second)]
    assert sum(consumed) == total
    assert all(c > 0 for c in consumed), f"one node did all the work: {consumed}"


# -- dead letters and the LISTEN connection ---------------------------------------------

def test_a_poison_row_is_dead_lettered_while_the_rest_flows(start, producers, clients):
    server = start("gevent", OUTBOX_BATCH_SIZE="5")
    producer = producers(server.database_url)
    alice = connect(clients, server, "alice")
    wait_for_listeners(producer)
    poison = [{"user_id": "alice", "type": "t"}, ["not", "an", "object"],
              note("alice", "x" * 201)]
    good = [note("alice", f"good-{i}") for i in range(12)]
    rows = good[:4] + poison[:1] + good[4:8] + poison[1:] + good[8:]
    producer.insert(*rows)
    wait_for_titles([alice], {r["title"] for r in good}, timeout=10)
    assert titles(alice) == [r["title"] for r in good]  # in order, the poison skipped
    dead = producer.conn.run("SELECT payload::text, error FROM notification_outbox_dead "
                             "ORDER BY id")
    assert [(json.loads(p), e) for p, e in dead] == [
        (poison[0], "title is required"),
        (poison[1], "the body must be a JSON object"),
        (poison[2], "title must be at most 200 characters"),
    ]
    assert producer.scalar("SELECT count(*) FROM notification_outbox") == 0
    assert metric(server, "notifier_outbox_rows_dead_lettered_total") == 3
    assert metric(server, "notifier_outbox_rows_consumed_total") == 12


def test_a_dropped_listen_connection_falls_back_to_polling_and_recovers(
        start, producers, clients, worker):
    server = start(worker)
    producer = producers(server.database_url)
    alice = connect(clients, server, "alice")
    (listener,) = wait_for_listeners(producer)

    def delivery(title: str) -> float:
        producer.insert(note("alice", title))
        committed = time.monotonic()
        wait_for_titles([alice], {title}, timeout=POLL * 3)
        return time.monotonic() - committed

    assert delivery("before") < WOKEN
    producer.conn.run("SELECT pg_terminate_backend(:p)", p=listener)
    time.sleep(0.3)
    assert delivery("while it is down") < POLL + WOKEN  # the poll found it
    (reconnected,) = wait_for_listeners(producer, exclude=(listener,), timeout=POLL * 3)
    time.sleep(0.3)
    for i in range(3):  # woken again: well under the poll, three times running
        assert delivery(f"after {i}") < WOKEN
    assert listener_pids(producer) == [reconnected]
    assert titles(alice) == ["before", "while it is down", "after 0", "after 1", "after 2"]
    assert "outbox LISTEN connection lost" in server.output()


# -- configuration -----------------------------------------------------------------------

def test_the_outbox_on_sqlite_stops_the_start_with_one_line(tmp_path):
    env = server_env(tmp_path, OUTBOX_ENABLED="1")  # server_env's DATABASE_URL: SQLite
    line = refused_start(env, "eventlet", "OUTBOX_ENABLED")
    assert line.startswith("configuration error: OUTBOX_ENABLED needs PostgreSQL")
