"""The database: SQLAlchemy and Flask-Migrate bound to the app, pool settings, and
SQLite's pragmas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event

from utils.config import Settings
from utils.db.sqlite_locks import busy_timeout
from utils.extensions import db, migrate

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


# PostgreSQL's pool: POOL_SIZE kept open, MAX_OVERFLOW more under load. Socket.IO
# connects may use CONNECT_SLOTS of them at once (utils/realtime/connect_gate.py),
# so a reconnect wave leaves the rest to HTTP requests and background tasks.
POOL_SIZE, MAX_OVERFLOW = 10, 20
CONNECT_SLOTS = {"postgresql": POOL_SIZE, "sqlite": 4}  # SQLAlchemy's SQLite pool holds 5


def connect_slots(url: str) -> int:
    """How many connects may use the database at once."""
    return CONNECT_SLOTS["sqlite" if url.startswith("sqlite") else "postgresql"]


def engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Greenthreads share pooled connections, so sqlite3's same-thread check would
        # misfire. Under eventlet/gevent sqlite3 must not wait for a lock in C, which
        # blocks the hub: writes wait in utils/db/sqlite_locks.py instead.
        return {"connect_args": {"check_same_thread": False, "timeout": busy_timeout()}}
    return {"pool_pre_ping": True, "pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW,
            "pool_timeout": 10}


def init_database(app: Flask, settings: Settings) -> None:
    app.config.update(SQLALCHEMY_DATABASE_URI=settings.database_url,
                      SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings.database_url))
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS))
    if settings.database_url.startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
