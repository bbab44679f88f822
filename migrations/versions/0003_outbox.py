"""the transactional outbox: notification_outbox and notification_outbox_dead

PostgreSQL only. On SQLite this revision creates nothing: SQLite deployments do not
get the outbox (docs/OUTBOX.md), and a start with OUTBOX_ENABLED on SQLite stops with
one line. The revision is still recorded, so the history is the same on both.

docs/outbox.sql holds the same statements for a producer's own database.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10

"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# One statement each: pg8000 sends each through the extended protocol, which takes one.
UPGRADE = (
    """CREATE TABLE IF NOT EXISTS notification_outbox (
    id         bigserial   PRIMARY KEY,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)""",
    """CREATE TABLE IF NOT EXISTS notification_outbox_dead (
    id         bigint      PRIMARY KEY,
    payload    jsonb       NOT NULL,
    error      text        NOT NULL,
    created_at timestamptz NOT NULL,
    dead_at    timestamptz NOT NULL DEFAULT now()
)""",
    # NOTIFY is transactional: the consumer is woken when the producer commits, and
    # not at all when it rolls back. Once per statement, not per row.
    """CREATE OR REPLACE FUNCTION notification_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notification_outbox', '');
    RETURN NULL;
END;
$$""",
    "DROP TRIGGER IF EXISTS notification_outbox_notify ON notification_outbox",
    """CREATE TRIGGER notification_outbox_notify
    AFTER INSERT ON notification_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notification_outbox_notify()""",
)

DOWNGRADE = (
    "DROP TABLE IF EXISTS notification_outbox",
    "DROP TABLE IF EXISTS notification_outbox_dead",
    "DROP FUNCTION IF EXISTS notification_outbox_notify()",
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade():
    if _postgresql():
        for statement in UPGRADE:
            op.execute(statement)


def downgrade():
    if _postgresql():
        for statement in DOWNGRADE:
            op.execute(statement)
