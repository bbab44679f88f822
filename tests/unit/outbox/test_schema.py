"""The outbox's tables: migration 0003 on PostgreSQL, nothing on SQLite, and
docs/outbox.sql creating the same tables and trigger in a producer's database."""

from __future__ import annotations

import json
import select
import time

import pg8000.native
import pytest
import sqlalchemy as sa

from tests.support.app import build_app
from tests.support.servers import ROOT
from tests.support.services import PG_HOST, PG_PORT
from tests.unit.outbox.conftest import database_name

OUTBOX_SQL = ROOT / "docs" / "outbox.sql"
COLUMNS = ("SELECT table_name, column_name, data_type, is_nullable, column_default "
           "FROM information_schema.columns WHERE table_name LIKE 'notification_outbox%' "
           "ORDER BY table_name, ordinal_position")


def statements(sql: str) -> list[str]:
    """docs/outbox.sql's statements, one each (a $$ body keeps its semicolons)."""
    found, current, quoted = [], [], False
    for line in sql.splitlines():
        if not quoted and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current.append(line)
        quoted ^= line.count("$$") % 2 == 1
        if not quoted and line.rstrip().endswith(";"):
            found.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    assert not current, "a statement without its semicolon"
    return found


def run_outbox_sql(url: str) -> None:
    conn = connect(url)
    try:
        for statement in statements(OUTBOX_SQL.read_text()):
            conn.run(statement)
    finally:
        conn.close()


def connect(url: str) -> pg8000.native.Connection:
    return pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT,
                                    database=database_name(url))


@pytest.mark.postgres
def test_docs_outbox_sql_creates_what_the_migration_creates(outbox_app, postgres_url,
                                                           fresh_database):
    url = fresh_database()
    run_outbox_sql(url)
    run_outbox_sql(url)  # idempotent: safe to run again
    theirs, ours = connect(url), connect(postgres_url)
    try:
        assert theirs.run(COLUMNS) == ours.run(COLUMNS)
        trigger = ("SELECT tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                   "WHERE tgrelid = 'notification_outbox'::regclass AND NOT tgisinternal")
        assert theirs.run(trigger) == ours.run(trigger)
        assert len(ours.run(trigger)) == 1
    finally:
        theirs.close()
        ours.close()


@pytest.mark.postgres
def test_a_producer_writes_only_the_payload_and_its_commit_notifies(outbox_app, postgres_url):
    listener, producer = connect(postgres_url), connect(postgres_url)
    try:
        listener.run("LISTEN notification_outbox")
        producer.run("BEGIN")
        producer.run("INSERT INTO notification_outbox (payload) VALUES (CAST(:p AS jsonb))",
                     p=json.dumps({"user_id": "a", "type": "t", "title": "x"}))
        producer.run("ROLLBACK")
        producer.run("INSERT INTO notification_outbox (payload) VALUES (CAST(:p AS jsonb)), "
                     "(CAST(:p AS jsonb))", p=json.dumps({"user_id": "a", "type": "t",
                                                          "title": "x"}))
        deadline = time.monotonic() + 5
        while not listener.notifications and time.monotonic() < deadline:
            select.select([listener._usock], [], [], 0.2)
            listener.run("SELECT 1")
        # One notification: the committed statement's (per statement, not per row),
        # none for the rolled-back one.
        time.sleep(0.2)
        listener.run("SELECT 1")
        assert [n[1] for n in listener.notifications] == ["notification_outbox"]
        row = producer.run("SELECT id, created_at FROM notification_outbox ORDER BY id")
        assert len(row) == 2 and row[0][1] is not None
    finally:
        listener.close()
        producer.close()


def test_on_sqlite_the_migration_runs_and_creates_no_outbox(tmp_path):
    app = build_app(tmp_path)
    from utils.extensions import db

    with app.app_context():
        tables = set(sa.inspect(db.engine).get_table_names())
        version = db.session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert "notification_outbox" not in tables
    assert "notification_outbox_dead" not in tables
    assert "notifications" in tables
    assert version == "0004"
