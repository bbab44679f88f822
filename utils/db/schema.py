"""Whether the database's schema is the one this code needs: Alembic's revision in the
database (``alembic_version``) against the newest migration in migrations/versions.

A database the operator never migrated, or one behind a deploy that added a
migration, answers queries with "no such table" or "undefined column": a request
must not call that "retry later" (utils/edge/error_handlers.py), /readyz must fail
with the reason (routes/health.py), and the start must say it in one line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
UPGRADE_COMMAND = "flask db upgrade"
# What PostgreSQL (SQLSTATE 42P01 undefined_table, 42703 undefined_column) and SQLite
# say when the schema is older than the code.
_MISSING = ("42P01", "42703", "no such table", "no such column",
            "has no column named")


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: never migrated
    head: str

    @property
    def behind(self) -> bool:
        return self.current != self.head

    def describe(self) -> str:
        """One line for a log or /readyz."""
        found = f"at revision {self.current}" if self.current else "not migrated"
        return (f"the database schema is {found}; this server needs revision {self.head}: "
                f"run `{UPGRADE_COMMAND}`")


@functools.cache
def head_revision() -> str:
    """The newest migration's revision (read from the files once)."""
    script = ScriptDirectory(str(MIGRATIONS))
    return script.get_current_head() or ""


_VERSION = sa.table("alembic_version", sa.column("version_num"))


def schema_state(conn: sa.Connection) -> SchemaState:
    """The database's revision on ``conn`` against the code's. Read from Alembic's
    table directly: configuring a MigrationContext logs two INFO lines per call."""
    current = None
    if sa.inspect(conn).has_table("alembic_version"):
        current = conn.execute(sa.select(_VERSION.c.version_num)).scalar()
    return SchemaState(current, head_revision())


def names_a_missing_table(exc: BaseException) -> bool:
    """Whether a database error says a table or column the code uses is not there."""
    text = str(getattr(exc, "orig", None) or exc)
    return any(mark in text for mark in _MISSING)
