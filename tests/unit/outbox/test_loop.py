"""The consumer's task (threads here; gunicorn's workers in tests/server/test_outbox.py):
a NOTIFY wakes it at once, and a lost LISTEN connection falls back to the poll and is
reconnected."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.app import build_app
from tests.unit.outbox.conftest import OUTBOX_TABLES

pytestmark = [pytest.mark.postgres]

POLL = 8.0  # long, so a delivery well under it is the NOTIFY's


@pytest.fixture
def running(tmp_path, postgres_url, outbox_app):
    import sqlalchemy as sa

    app = build_app(tmp_path / "loop", DATABASE_URL=postgres_url, OUTBOX_ENABLED="1",
                    OUTBOX_POLL_SECONDS=str(POLL))
    from utils.extensions import db
    from utils.services import services

    with app.app_context():
        db.session.execute(sa.text(f"TRUNCATE notifications, {OUTBOX_TABLES}"))
        db.session.commit()
    consumer = services(app).outbox
    consumer.ensure_started()
    yield consumer
    consumer.stop()
    consumer.task.join(timeout=POLL + 5)
    assert not consumer.task.is_alive()


def produce_and_time(producer, title: str, timeout: float = 15) -> float:
    started = time.monotonic()
    producer.run("INSERT INTO notification_outbox (payload) VALUES (CAST(:p AS jsonb))",
                 p=json.dumps({"user_id": "alice", "type": "t", "title": title}))
    while time.monotonic() - started < timeout:
        if producer.run("SELECT count(*) FROM notifications WHERE title = :t", t=title)[0][0]:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{title!r} not consumed within {timeout}s")


def listener_pids(producer) -> list[int]:
    return [r[0] for r in producer.run(
        "SELECT pid FROM pg_stat_activity WHERE application_name = "
        "'notifier outbox listener' AND datname = current_database()")]


def wait_for_listener(producer, not_pid: int | None = None, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in listener_pids(producer) if p != not_pid]
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError("no LISTEN connection")


def test_notify_wakes_the_consumer_and_a_dropped_listen_falls_back_and_recovers(
        running, producer):
    pid = wait_for_listener(producer)
    assert running.listener.backend_pid == pid
    for i in range(3):
        assert produce_and_time(producer, f"woken-{i}") < POLL / 4  # slack for a loaded CI
    producer.run("SELECT pg_terminate_backend(:p)", p=pid)
    assert produce_and_time(producer, "polled") < POLL + 2  # the poll still runs
    new_pid = wait_for_listener(producer, not_pid=pid, timeout=2 * POLL + 2)
    assert new_pid != pid
    time.sleep(0.3)
    for i in range(3):
        assert produce_and_time(producer, f"woken-again-{i}") < POLL / 4


def test_a_failing_pass_is_logged_once_and_the_task_keeps_polling(
        tmp_path, postgres_url, fresh_database, outbox_app, caplog):
    """An outbox database without the table (outbox.sql not run yet): one log line,
    not one per poll; once the table exists, rows flow without a restart."""
    import logging

    import pg8000.native

    from tests.support.services import PG_HOST, PG_PORT
    from tests.unit.outbox.conftest import database_name
    from tests.unit.outbox.test_schema import run_outbox_sql
    from utils.services import services

    outbox_url = fresh_database()
    app = build_app(tmp_path / "missing", DATABASE_URL=postgres_url, OUTBOX_ENABLED="1",
                    OUTBOX_DATABASE_URL=outbox_url, OUTBOX_POLL_SECONDS="0.1")
    consumer = services(app).outbox
    producer = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                        database=database_name(outbox_url))
    caplog.set_level(logging.INFO, logger="utils.outbox.consumer")
    consumer.ensure_started()
    try:
        time.sleep(1.0)  # about ten polls
        failures = [r.getMessage() for r in caplog.records if "pass failed" in r.getMessage()]
        assert failures == ['outbox pass failed: 42P01 relation "notification_outbox" '
                            'does not exist']
        run_outbox_sql(outbox_url)
        producer.run("INSERT INTO notification_outbox (payload) VALUES (CAST(:p AS jsonb))",
                     p=json.dumps({"user_id": "alice", "type": "t", "title": "at last"}))
        notifier = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                            database=database_name(postgres_url))
        try:
            deadline = time.monotonic() + 5
            while not notifier.run("SELECT count(*) FROM notifications "
                                   "WHERE title = 'at last'")[0][0]:
                assert time.monotonic() < deadline, "not consumed once the table exists"
                time.sleep(0.05)
        finally:
            notifier.close()
        deadline = time.monotonic() + 5  # logged when the pass ends, after its commit
        while not any("succeed again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the recovery was not logged"
            time.sleep(0.05)
    finally:
        consumer.stop()
        consumer.task.join(timeout=5)
        producer.close()
        consumer.engine().dispose()
    assert not consumer.task.is_alive()
