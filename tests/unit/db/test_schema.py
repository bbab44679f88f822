"""Issue 24, finding 2: a database without the code's migrations is not ready. /readyz
fails with the reason; a request that meets a missing table is answered
database_not_migrated (never "retry later"); the start says so in one line."""

from __future__ import annotations

import logging

import pytest
from flask_migrate import downgrade

from tests.support.app import API_KEY, ORIGIN, SECRET
from utils.db.schema import head_revision


def unmigrated_app(tmp_path):
    from app import create_app

    app = create_app({"APP_ENV": "development", "INSTANCE_PATH": str(tmp_path / "instance"),
                      "ASYNC_MODE": "threading", "REDIS_URL": "",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}",
                      "JWT_SECRET_KEY": SECRET, "NOTIFY_API_KEY": API_KEY,
                      "FRONTEND_URLS": ORIGIN})
    app.config["TESTING"] = True
    return app


def test_the_code_needs_the_newest_migration():
    assert head_revision() == "0004"


def test_readyz_on_a_migrated_database_is_ok(client):
    body = client.get("/readyz").get_json()
    assert (body["status"], body["database"], body["schema"]) == ("ok", "ok", "ok")
    assert "reason" not in body


def test_readyz_on_a_database_never_migrated_fails_and_names_the_command(tmp_path):
    response = unmigrated_app(tmp_path).test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert (body["status"], body["database"], body["schema"]) == ("error", "ok", "behind")
    assert body["reason"] == ("the database schema is not migrated; this server needs "
                              "revision 0004: run `flask db upgrade`")


def test_readyz_on_a_database_one_migration_behind_names_both_revisions(app):
    with app.app_context():
        downgrade(revision="0003")
    body = app.test_client().get("/readyz").get_json()
    assert body["schema"] == "behind"
    assert "at revision 0003; this server needs revision 0004" in body["reason"]


def test_a_missing_table_is_never_retry_later(tmp_path, caplog):
    client = unmigrated_app(tmp_path).test_client()
    with caplog.at_level(logging.ERROR):
        response = client.post("/api/notifications", headers={
            "Authorization": f"Bearer {API_KEY}"}, json={"user_id": "a", "type": "t",
                                                         "title": "x"})
    assert response.status_code == 503
    assert "Retry-After" not in response.headers
    error = response.get_json()["error"]
    assert error["code"] == "database_not_migrated"
    assert "flask db upgrade" in error["message"] and "retry later" not in error["message"]
    assert any("flask db upgrade" in r.getMessage() for r in caplog.records)


def test_a_missing_column_is_not_migrated_either(app, api_headers):
    """A database one migration behind: the notifications table is there, its new
    columns are not."""
    with app.app_context():
        downgrade(revision="0003")
    response = app.test_client().post("/api/notifications", headers=api_headers,
                                      json={"user_id": "a", "type": "t", "title": "x"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_not_migrated"


@pytest.mark.parametrize("migrated", [False, True])
def test_the_start_says_in_one_line_when_the_schema_is_behind(tmp_path, caplog, migrated):
    from flask_migrate import upgrade

    from entrypoints.runtime import _say_if_not_migrated

    app = unmigrated_app(tmp_path)
    if migrated:
        with app.app_context():
            upgrade()
    with caplog.at_level(logging.ERROR, logger="entrypoints.runtime"):
        _say_if_not_migrated(app)
    lines = [r.getMessage() for r in caplog.records if r.name == "entrypoints.runtime"]
    if migrated:
        assert lines == []
    else:
        assert lines == ["the database schema is not migrated; this server needs revision "
                         "0004: run `flask db upgrade`"]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_upgrading_an_existing_database_to_0004_keeps_its_rows(tmp_path, database,
                                                              request):
    """Issue 23: `flask db upgrade` on a database at 0003 with notifications and a
    push subscription in it: the rows stay, the new columns take their defaults, and
    SQLite's notifications keep AUTOINCREMENT (ids are never reused)."""
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from tests.support.app import build_app
    from utils.extensions import db

    overrides = {}
    if database == "postgresql":
        overrides["DATABASE_URL"] = request.getfixturevalue("fresh_database")()
    app = build_app(tmp_path, **overrides)
    with app.app_context():
        downgrade(revision="0003")
        with db.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO notifications (user_id, type, title, data, created_at, push)"
                " VALUES ('alice', 't', 'kept', '{}', CURRENT_TIMESTAMP, 'auto')"))
            conn.execute(sa.text(
                "INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth, created_at)"
                " VALUES ('alice', 'https://push.example/x', 'k', 'a', CURRENT_TIMESTAMP)"))
        upgrade()
        with db.engine.begin() as conn:
            row = conn.execute(sa.text("SELECT id, title, critical, collapse_key FROM "
                                       "notifications")).one()
            assert (row.title, bool(row.critical), row.collapse_key) == ("kept", False, None)
            enabled = conn.execute(sa.text("SELECT enabled FROM push_subscriptions")).scalar()
            assert bool(enabled) is True
            assert schema_state_of(conn) == "0004"
            if database == "sqlite":
                ddl = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE "
                                           "name = 'notifications'")).scalar()
                assert "AUTOINCREMENT" in ddl.upper()
    assert app.test_client().get("/readyz").get_json()["schema"] == "ok"


def schema_state_of(conn) -> str | None:
    from utils.db.schema import schema_state

    return schema_state(conn).current
