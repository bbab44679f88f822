"""The command line: create-token, notify, prune, db upgrade."""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from tests.support.servers import refusal, run_command
from utils.auth.tokens import verify_access_token

FLASK = str(Path(sys.executable).parent / "flask")


def test_create_token_prints_a_token_the_server_accepts(app, runner):
    result = runner.invoke(args=["create-token", "alice", "--ttl", "120"])
    assert result.exit_code == 0
    with app.app_context():
        verified = verify_access_token(result.output.strip())
    assert verified.user_id == "alice"


def test_create_token_rejects_a_bad_ttl(runner):
    result = runner.invoke(args=["create-token", "alice", "--ttl", "0"])
    assert result.exit_code == 2


def test_notify_stores_and_emits_through_the_same_path(app, runner, sio_client, make_token):
    socket = sio_client(auth={"token": make_token("alice")})
    socket.get_received()
    result = runner.invoke(args=["notify", "alice", "--type", "deploy", "--title", "Shipped",
                                 "--body", "v2", "--data", '{"sha": "abc"}'])
    assert result.exit_code == 0, result.output
    stored = json.loads(result.output)["notifications"][0]
    got = [m["args"][0] for m in socket.get_received() if m["name"] == "notification"]
    assert got[0]["id"] == stored["id"]
    assert (got[0]["title"], got[0]["body"], got[0]["data"]) == ("Shipped", "v2", {"sha": "abc"})


def test_notify_rejects_bad_data_without_storing(app, runner):
    from utils.notifications import store

    bad_json = runner.invoke(args=["notify", "alice", "--type", "t", "--title", "x",
                                   "--data", "{nope"])
    assert bad_json.exit_code == 2 and "--data" in bad_json.output
    not_object = runner.invoke(args=["notify", "alice", "--type", "t", "--title", "x",
                                     "--data", "[1]"])
    assert not_object.exit_code == 1 and "data must be a JSON object" in not_object.output
    too_long = runner.invoke(args=["notify", "alice", "--type", "t", "--title", "x" * 201])
    assert too_long.exit_code == 1 and "title" in too_long.output
    assert "Traceback" not in bad_json.output + not_object.output + too_long.output
    with app.app_context():
        assert store.unread_count("alice") == 0


def test_prune_uses_the_retention_default(app, runner, notify):
    from utils.extensions import db
    from utils.notifications import store
    from utils.notifications.models import Notification

    old, fresh = notify("alice")[0], notify("alice")[0]
    with app.app_context():
        db.session.execute(sa.update(Notification).where(Notification.id == old)
                           .values(created_at=store.utcnow() - timedelta(days=91)))
        db.session.commit()
    result = runner.invoke(args=["prune"])
    assert result.exit_code == 0
    assert "deleted 1 notification(s) older than 90 day(s)" in result.output
    assert runner.invoke(args=["prune", "--older-than", "1"]).output.startswith("deleted 0")
    with app.app_context():
        assert [r.id for r in store.after("alice", 0, 10)[0]] == [fresh]


def test_db_upgrade_creates_the_schema_from_nothing(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "APP_ENV": "development", "INSTANCE_PATH": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}", "PYTHONWARNINGS": "ignore"}
    result = run_command([FLASK, "--app", "app", "db", "upgrade"], env)
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert {"notifications", "idempotency_keys", "watermarks"} <= set(
        sa.inspect(engine).get_table_names())
    engine.dispose()


def test_cli_in_production_without_secret_fails_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "APP_ENV": "production", "INSTANCE_PATH": str(tmp_path),
           "FRONTEND_URLS": "https://app.example.com", "PYTHONWARNINGS": "ignore",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'volume.db'}"}
    result = run_command([FLASK, "--app", "app", "create-token", "alice"], env)
    assert result.returncode != 0
    assert "configuration error: JWT_SECRET_KEY is required in production" in result.stderr
    assert "Traceback" not in result.stderr


def test_predeploy_in_production_without_database_url_fails_with_one_line(tmp_path):
    """Railway's preDeployCommand (db upgrade) is the first to load the app: without
    DATABASE_URL the deploy stops there, saying what to set."""
    env = {"PATH": "/usr/bin:/bin", "RAILWAY_ENVIRONMENT": "production",
           "INSTANCE_PATH": str(tmp_path), "JWT_SECRET_KEY": "c" * 40,
           "FRONTEND_URLS": "https://app.example.com", "PYTHONWARNINGS": "ignore"}
    assert refusal([FLASK, "--app", "app", "db", "upgrade"], env) == [
        "configuration error: DATABASE_URL is required in production: a PostgreSQL URL "
        "(on Railway, ${{Postgres.DATABASE_URL}}), or sqlite:////path/notifications.db "
        "on a persistent volume"]
    assert not list(tmp_path.iterdir())


def test_prune_waits_for_a_writer_in_another_process(app, runner):
    """The CLI has no hub to block: sqlite3 waits in its busy handler, as before."""
    from tests.unit.db.test_sqlite_locks import WriteLockHolder

    database = Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    with WriteLockHolder(database, 0.5):
        started = time.monotonic()
        result = runner.invoke(args=["prune"])
        took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert result.output.startswith("deleted 0") and took >= 0.3


def test_a_write_locked_past_the_deadline_fails_with_one_line(tmp_path, monkeypatch):
    from tests.support.app import build_app
    from tests.unit.db.test_sqlite_locks import WriteLockHolder
    from utils.db import sqlite_locks

    monkeypatch.setattr(sqlite_locks, "WRITE_DEADLINE_SECONDS", 0.3)
    app = build_app(tmp_path)
    database = Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    with WriteLockHolder(database, 1.5):
        notify = app.test_cli_runner().invoke(args=["notify", "alice", "--type", "t",
                                                    "--title", "x"])
        prune = app.test_cli_runner().invoke(args=["prune"])
    for result in (notify, prune):
        assert result.exit_code == 1
        assert result.output == ("Error: the database is unavailable (database is locked); "
                                 "retry later\n")
