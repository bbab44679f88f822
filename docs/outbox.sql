-- The notification outbox, for a producer's own PostgreSQL database (PostgreSQL 11+).
-- docs/OUTBOX.md explains it. The notifier's migration 0003 creates the same tables in
-- the notifier's database; run this file where your application's own tables live when
-- the notifier reads the outbox there (OUTBOX_DATABASE_URL).
--
-- A producer writes only this, inside its own transaction:
--
--     INSERT INTO notification_outbox (payload)
--     VALUES ('{"user_id": "alice", "type": "comment", "title": "New comment"}');
--
-- The payload is exactly the body POST /api/notifications takes. Every other column
-- has a default. The notifier stores each committed row once, as its notifications,
-- and deletes it; a row that fails validation moves to notification_outbox_dead with
-- its error.
--
-- The notifier's database user needs SELECT, UPDATE (for SELECT ... FOR UPDATE) and
-- DELETE on notification_outbox, INSERT on notification_outbox_dead, nothing else here.
-- Safe to run again: every statement is idempotent.

CREATE TABLE IF NOT EXISTS notification_outbox (
    id         bigserial   PRIMARY KEY,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notification_outbox_dead (
    id         bigint      PRIMARY KEY,   -- the outbox row's id
    payload    jsonb       NOT NULL,
    error      text        NOT NULL,      -- why it was refused, e.g. "title is required"
    created_at timestamptz NOT NULL,      -- when the producer inserted it
    dead_at    timestamptz NOT NULL DEFAULT now()
);

-- Wakes the notifier (LISTEN notification_outbox) when a producer commits: NOTIFY is
-- transactional, so a rolled-back insert wakes nobody. Once per statement, not per
-- row. Without it the notifier still finds the rows by polling (OUTBOX_POLL_SECONDS).
CREATE OR REPLACE FUNCTION notification_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notification_outbox', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS notification_outbox_notify ON notification_outbox;
CREATE TRIGGER notification_outbox_notify
    AFTER INSERT ON notification_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notification_outbox_notify();
