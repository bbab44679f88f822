"""An app on real PostgreSQL with the outbox on, and a producer's connection to it."""

from __future__ import annotations

import pg8000.native
import pytest
import sqlalchemy as sa

from tests.support.app import build_app
from tests.support.services import PG_HOST, PG_PORT

pytestmark = [pytest.mark.postgres]

OUTBOX_TABLES = "notification_outbox, notification_outbox_dead"


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.fixture
def outbox_app(tmp_path, postgres_url):
    """The app on the run's PostgreSQL database with OUTBOX_ENABLED, batches of 3,
    its tables emptied. The consumer's task is not started: tests call its passes."""
    app = build_app(tmp_path, DATABASE_URL=postgres_url, OUTBOX_ENABLED="1",
                    OUTBOX_BATCH_SIZE="3", OUTBOX_POLL_SECONDS="0.2")
    from utils.extensions import db

    with app.app_context():
        db.session.execute(sa.text(
            f"TRUNCATE notifications, idempotency_keys, {OUTBOX_TABLES} RESTART IDENTITY"))
        db.session.commit()
    return app


@pytest.fixture
def producer(postgres_url):
    """A producer's own connection (pg8000, autocommit unless it says BEGIN)."""
    conn = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                    database=database_name(postgres_url))
    yield conn
    conn.close()
