"""The transactional outbox, from a producer's own database transaction.

    from notify_client import enqueue

    with Session(engine) as session, session.begin():
        session.add(comment)
        enqueue(session, {"user_id": "alice", "type": "comment", "title": "New comment"})
    # committed together: the notifier delivers it once; rolled back: never.

``enqueue`` adds one row to ``notification_outbox`` (docs/outbox.sql creates it, in the
notifier's database or your own) through the SQLAlchemy ``Connection`` or ``Session``
you already hold, inside your transaction; it never commits. The payload is exactly
what ``POST /api/notifications`` takes. It is checked by the notifier, not here: a
payload the notifier refuses lands in ``notification_outbox_dead`` with its error.

The package needs nothing beyond the standard library; this module needs SQLAlchemy
(1.4 or 2.x) only when ``enqueue`` is called, and a PostgreSQL database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["OUTBOX_TABLE", "enqueue"]

OUTBOX_TABLE = "notification_outbox"
_INSERT = (f"INSERT INTO {OUTBOX_TABLE} (payload) VALUES (CAST(:payload AS jsonb)) "
           "RETURNING id")


def enqueue(connection_or_session: Any, payload: Mapping[str, Any]) -> int:
    """Insert ``payload`` (what ``POST /api/notifications`` takes) into the outbox in
    the caller's transaction, without committing; returns the row's id.

    ``connection_or_session`` is a SQLAlchemy ``Connection`` or ``Session`` (its
    ``execute`` takes a ``text`` statement and parameters). The payload must be a
    JSON object; anything ``json.dumps`` refuses raises ``TypeError`` or ``ValueError``
    here, before the database sees it."""
    if not isinstance(payload, Mapping):
        raise TypeError("payload must be a mapping: the body POST /api/notifications takes")
    from sqlalchemy import text  # only here: the package itself has no dependencies

    # allow_nan=False: NaN and Infinity are not JSON, and PostgreSQL's jsonb refuses them.
    document = json.dumps(dict(payload), separators=(",", ":"), allow_nan=False)
    result = connection_or_session.execute(text(_INSERT), {"payload": document})
    return int(result.scalar_one())
