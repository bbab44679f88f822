"""The outbox consumer's claim, validation, store and dead letters, against real
PostgreSQL (no task: each test runs the consumer's passes itself)."""

from __future__ import annotations

import json
import threading

import pg8000.native
import pytest

from tests.support.app import ORIGIN
from tests.support.services import PG_HOST, PG_PORT
from tests.unit.outbox.conftest import database_name
from utils.services import services

pytestmark = [pytest.mark.postgres]


def insert(producer, *payloads) -> list[int]:
    """One producer transaction inserting ``payloads``; returns their ids."""
    producer.run("BEGIN")
    ids = [producer.run("INSERT INTO notification_outbox (payload) VALUES (CAST(:p AS jsonb))"
                        " RETURNING id", p=json.dumps(p))[0][0] for p in payloads]
    producer.run("COMMIT")
    return ids


def note(user: str, title: str, **fields) -> dict:
    return {"user_id": user, "type": "outbox", "title": title, **fields}


def stored(producer) -> list[tuple]:
    return [tuple(r) for r in producer.run(
        "SELECT user_id, type, title, body, data::text, push FROM notifications ORDER BY id")]


def count(producer, table: str) -> int:
    return producer.run(f"SELECT count(*) FROM {table}")[0][0]


def consumer(app):
    return services(app).outbox


def metric(name: str) -> float:
    from utils.ops import metrics

    value = metrics.REGISTRY.get_sample_value(name)
    return value or 0.0


def test_committed_rows_are_stored_once_in_order_and_removed(outbox_app, producer):
    insert(producer, note("alice", "one", body="b", data={"k": [1, "x"]}),
           note("bob", "two", push="never"))
    insert(producer, {"user_ids": ["carol", "dave"], "type": "t", "title": "three"})
    handled = consumer(outbox_app).run_pass()
    assert handled == 3
    assert stored(producer) == [
        ("alice", "outbox", "one", "b", '{"k": [1, "x"]}', "auto"),
        ("bob", "outbox", "two", None, "{}", "never"),
        ("carol", "t", "three", None, "{}", "auto"),
        ("dave", "t", "three", None, "{}", "auto"),
    ]
    assert count(producer, "notification_outbox") == 0
    assert consumer(outbox_app).run_pass() == 0  # nothing twice
    assert len(stored(producer)) == 4


def test_a_batch_takes_at_most_the_batch_size(outbox_app, producer):
    insert(producer, *[note("alice", f"n{i}") for i in range(7)])
    assert consumer(outbox_app).consume_batch(3) == 3
    assert [r[2] for r in stored(producer)] == ["n0", "n1", "n2"]
    assert count(producer, "notification_outbox") == 4
    assert consumer(outbox_app).run_pass() == 4  # the pass goes on while batches are full


def test_a_rolled_back_producer_transaction_leaves_nothing(outbox_app, producer):
    producer.run("BEGIN")
    producer.run("INSERT INTO notification_outbox (payload) VALUES (CAST(:p AS jsonb))",
                 p=json.dumps(note("alice", "never")))
    producer.run("ROLLBACK")
    assert consumer(outbox_app).run_pass() == 0
    assert stored(producer) == []


def test_an_uncommitted_row_is_not_seen_and_does_not_block_committed_ones(outbox_app,
                                                                           producer,
                                                                           postgres_url):
    other = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                     database=database_name(postgres_url))
    try:
        other.run("BEGIN")
        other.run("INSERT INTO notification_outbox (payload) VALUES (CAST(:p AS jsonb))",
                  p=json.dumps(note("alice", "later")))
        insert(producer, note("alice", "now"))
        assert consumer(outbox_app).run_pass() == 1
        assert [r[2] for r in stored(producer)] == ["now"]
        other.run("COMMIT")
    finally:
        other.close()
    assert consumer(outbox_app).run_pass() == 1
    assert [r[2] for r in stored(producer)] == ["now", "later"]


def test_rows_another_consumer_holds_are_skipped_not_waited_for(outbox_app, producer,
                                                                postgres_url):
    """SKIP LOCKED: a second node's claim in progress (rows locked FOR UPDATE) is
    neither waited for nor taken again."""
    ids = insert(producer, *[note("alice", f"n{i}") for i in range(4)])
    holder = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                      database=database_name(postgres_url))
    try:
        holder.run("BEGIN")
        held = holder.run("SELECT id FROM notification_outbox ORDER BY id LIMIT 2 "
                          "FOR UPDATE SKIP LOCKED")
        assert [r[0] for r in held] == ids[:2]
        done = []
        worker = threading.Thread(target=lambda: done.append(consumer(outbox_app).run_pass()))
        worker.start()
        worker.join(timeout=10)
        assert done == [2], "the pass waited for the held rows"
        assert [r[2] for r in stored(producer)] == ["n2", "n3"]
        holder.run("ROLLBACK")  # the other node died: its rows come back
    finally:
        holder.close()
    assert consumer(outbox_app).run_pass() == 2
    assert sorted(r[2] for r in stored(producer)) == ["n0", "n1", "n2", "n3"]


@pytest.mark.parametrize(("payload", "error"), [
    ({"user_id": "alice", "type": "t"}, "title is required"),
    ({"type": "t", "title": "x"}, "user_id or user_ids is required"),
    ([1, 2, 3], "the body must be a JSON object"),
    ("just text", "the body must be a JSON object"),
    ({"user_id": "alice", "type": "t", "title": "x", "push": "sometimes"},
     "push must be auto, always, never or if_offline"),
])
def test_a_poison_row_is_dead_lettered_with_its_error_and_the_rest_flows(
        outbox_app, producer, payload, error):
    dead_before = metric("notifier_outbox_rows_dead_lettered_total")
    consumed_before = metric("notifier_outbox_rows_consumed_total")
    ids = insert(producer, note("alice", "before"), payload, note("alice", "after"))
    assert consumer(outbox_app).run_pass() == 3
    assert [r[2] for r in stored(producer)] == ["before", "after"]
    dead = producer.run("SELECT id, payload::text, error, created_at, dead_at "
                        "FROM notification_outbox_dead")
    assert len(dead) == 1
    assert dead[0][0] == ids[1]
    assert json.loads(dead[0][1]) == payload
    assert dead[0][2] == error
    assert dead[0][3] <= dead[0][4]
    assert count(producer, "notification_outbox") == 0
    assert metric("notifier_outbox_rows_dead_lettered_total") == dead_before + 1
    assert metric("notifier_outbox_rows_consumed_total") == consumed_before + 2


def test_a_row_the_database_refuses_is_dead_lettered_alone(outbox_app, producer):
    """A payload validation lets through but the database refuses (here a trigger
    raising a data exception for one title): its batch is stored row by row, the
    refused row is dead-lettered, and the others of the batch are stored once."""
    producer.run("""CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.title = 'boom' THEN
                RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22000';
            END IF;
            RETURN NEW;
        END $$""")
    producer.run("CREATE TRIGGER refuse_boom BEFORE INSERT ON notifications "
                 "FOR EACH ROW EXECUTE FUNCTION refuse_boom()")
    try:
        insert(producer, note("alice", "ok1"), note("alice", "boom"), note("alice", "ok2"))
        assert consumer(outbox_app).run_pass() == 3
    finally:
        producer.run("DROP TRIGGER refuse_boom ON notifications")
        producer.run("DROP FUNCTION refuse_boom()")
    assert [r[2] for r in stored(producer)] == ["ok1", "ok2"]
    dead = producer.run("SELECT payload->>'title', error FROM notification_outbox_dead")
    assert dead == [["boom", "could not be stored: 22000 refused by the test"]]
    assert count(producer, "notification_outbox") == 0


def test_emits_follow_the_commit_to_each_users_room(outbox_app, producer, make_token_for):
    from utils.extensions import socketio

    alice = socketio.test_client(outbox_app, auth={"token": make_token_for(outbox_app,
                                                                           "alice")},
                                 headers={"Origin": ORIGIN})
    try:
        alice.get_received()
        insert(producer, note("alice", "hello"), note("bob", "not yours"))
        consumer(outbox_app).run_pass()
        got = [p["args"][0] for p in alice.get_received() if p["name"] == "notification"]
    finally:
        alice.disconnect()
    ids = [r[0] for r in producer.run("SELECT id FROM notifications WHERE user_id = 'alice'")]
    assert [(n["id"], n["title"]) for n in got] == [(ids[0], "hello")]


def test_the_lag_gauge_is_the_age_of_the_oldest_row(outbox_app, producer, postgres_url):
    other = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                     database=database_name(postgres_url))
    try:
        # A row locked by another consumer stays in the outbox: the gauge sees it.
        insert(producer, note("alice", "old"))
        producer.run("UPDATE notification_outbox SET created_at = now() - interval '42 s'")
        other.run("BEGIN")
        other.run("SELECT id FROM notification_outbox FOR UPDATE")
        consumer(outbox_app).run_pass()
        assert 42 <= metric("notifier_outbox_lag_seconds") < 60
        other.run("ROLLBACK")
    finally:
        other.close()
    consumer(outbox_app).run_pass()
    assert metric("notifier_outbox_lag_seconds") == 0


def test_an_outbox_in_another_database_stores_each_row_once_by_its_key(
        tmp_path, postgres_url, fresh_database, outbox_app):
    """OUTBOX_DATABASE_URL names a producer's database (set up with docs/outbox.sql).
    The stores commit before the claim: a claim that fails to commit (a crash between
    the two) leaves the rows, and taking them again stores nothing twice."""
    from tests.support.app import build_app
    from tests.unit.outbox.test_schema import run_outbox_sql

    outbox_url = fresh_database()
    run_outbox_sql(outbox_url)
    app = build_app(tmp_path / "elsewhere", DATABASE_URL=postgres_url, OUTBOX_ENABLED="1",
                    OUTBOX_DATABASE_URL=outbox_url.replace("postgresql://", "postgres://"))
    the_consumer = consumer(app)
    assert not the_consumer.same_database
    producer = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                        database=database_name(outbox_url))
    notifier = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                        database=database_name(postgres_url))
    try:
        insert(producer, note("alice", "a"), {"type": "bad"}, note("bob", "b"))
        # The crash: the stores commit, then the claim's transaction is rolled back.
        engine = the_consumer.engine()
        from utils.outbox import batch as batches

        with app.app_context(), engine.connect() as conn:
            trans = conn.begin()
            first = batches.consume_elsewhere(conn, 10, the_consumer._tag)
            trans.rollback()
        assert first.consumed == 2 and len(first.emits) == 2
        assert count(producer, "notification_outbox") == 3  # still there
        assert count(notifier, "notifications") == 2
        # Taken again after the "restart": replays, nothing stored or emitted twice.
        with app.app_context(), engine.begin() as conn:
            again = batches.consume_elsewhere(conn, 10, the_consumer._tag)
        assert again.consumed == 2 and again.emits == []
        assert count(notifier, "notifications") == 2
        assert count(producer, "notification_outbox") == 0
        keys = [r[0] for r in notifier.run("SELECT key FROM idempotency_keys ORDER BY key")]
        assert len(keys) == 2 and all(k.startswith("outbox:") for k in keys)
        assert producer.run("SELECT error FROM notification_outbox_dead") == [
            ["user_id or user_ids is required"]]
        # And the consumer's own pass, on new rows.
        insert(producer, note("carol", "c"))
        assert the_consumer.run_pass() == 1
        assert count(notifier, "notifications") == 3
    finally:
        producer.close()
        notifier.close()
        the_consumer.engine().dispose()


def test_a_pass_is_bounded_and_says_when_rows_remain(outbox_app, producer):
    from utils.outbox.consumer import MAX_BATCHES_PER_PASS

    bound = 3 * MAX_BATCHES_PER_PASS  # batches of 3 (the fixture's OUTBOX_BATCH_SIZE)
    insert(producer, *[note("alice", f"n{i}") for i in range(bound + 2)])
    the_consumer = consumer(outbox_app)
    assert the_consumer.run_pass() == bound
    assert the_consumer.backlog is True  # the task goes on without waiting for a NOTIFY
    assert the_consumer.run_pass() == 2
    assert the_consumer.backlog is False
    assert [r[2] for r in stored(producer)] == [f"n{i}" for i in range(bound + 2)]


def test_outbox_rows_meet_their_recipients_preferences(outbox_app, producer, make_token_for):
    """Issue 23: the outbox applies preferences as the HTTP path does: a row muted for
    push is stored with push "never" and emitted; a row muted on every channel is
    consumed, stores nothing and emits nothing (it is not dead-lettered); a critical
    row goes through; muted in_app alone, it is stored read, not emitted, pushed."""
    from utils.extensions import db, socketio
    from utils.notifications import preferences

    with outbox_app.app_context(), db.engine.begin() as conn:
        preferences.write(conn, "alice", preferences.parse(
            {"types": {"quiet": {"push": False, "in_app": False}, "loud": {"push": False},
                      "hidden": {"in_app": False}}}))
    alice = socketio.test_client(outbox_app, auth={"token": make_token_for(outbox_app,
                                                                           "alice")},
                                 headers={"Origin": ORIGIN})
    try:
        alice.get_received()
        insert(producer, {**note("alice", "loud"), "type": "loud", "push": "always"},
               {**note("alice", "quiet"), "type": "quiet"},
               {**note("alice", "critical"), "type": "quiet", "critical": True},
               {**note("alice", "hidden"), "type": "hidden"})
        assert consumer(outbox_app).run_pass() == 4
        got = [p["args"][0]["title"] for p in alice.get_received()
               if p["name"] == "notification"]
    finally:
        alice.disconnect()
    rows = producer.run("SELECT title, push, critical, read_at IS NOT NULL FROM notifications"
                        " ORDER BY id")
    assert rows == [["loud", "never", False, False], ["critical", "auto", True, False],
                    ["hidden", "always", False, True]]
    assert got == ["loud", "critical"]
    assert count(producer, "notification_outbox") == 0
    assert count(producer, "notification_outbox_dead") == 0
