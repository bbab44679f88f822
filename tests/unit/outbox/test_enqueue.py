"""The Python client's ``enqueue``: one outbox row through the caller's SQLAlchemy
Connection or Session, in the caller's transaction, against real PostgreSQL."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa
from notify_client import enqueue
from sqlalchemy.orm import Session

pytestmark = [pytest.mark.postgres]

PAYLOAD = {"user_id": "alice", "type": "comment", "title": "New comment",
           "data": {"post": 7, "text": "ünïcode ✓"}}


@pytest.fixture
def engine(outbox_app, postgres_url):
    """A producer's own engine (psycopg is not installed here: pg8000, as the app)."""
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+pg8000://"))
    yield engine
    engine.dispose()


def rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT id, payload FROM notification_outbox ORDER BY id"))]


def test_through_a_connection_it_commits_with_the_callers_transaction(engine):
    with engine.begin() as conn:
        row_id = enqueue(conn, PAYLOAD)
        assert rows(engine) == []  # not committed by enqueue: others do not see it yet
    assert rows(engine) == [(row_id, PAYLOAD)]


def test_through_a_session_a_rollback_leaves_nothing(engine):
    with Session(engine) as session:
        enqueue(session, PAYLOAD)
        session.rollback()
    assert rows(engine) == []
    with Session(engine) as session, session.begin():
        first = enqueue(session, PAYLOAD)
        second = enqueue(session, {**PAYLOAD, "title": "Another"})
    assert [r[0] for r in rows(engine)] == [first, second]
    assert second > first


def test_a_payload_that_is_not_a_json_object_is_refused_before_the_database(engine):
    with engine.begin() as conn:
        with pytest.raises(TypeError):
            enqueue(conn, ["not", "an", "object"])  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            enqueue(conn, {**PAYLOAD, "data": {"x": math.nan}})
        with pytest.raises(TypeError):
            enqueue(conn, {**PAYLOAD, "data": {"x": object()}})
    assert rows(engine) == []


def test_an_enqueued_row_is_consumed_as_a_notification(engine, outbox_app):
    from utils.services import services

    with engine.begin() as conn:
        enqueue(conn, PAYLOAD)
    assert services(outbox_app).outbox.run_pass() == 1
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT user_id, title, data FROM notifications")).all()
    assert [tuple(r) for r in got] == [("alice", "New comment", PAYLOAD["data"])]
