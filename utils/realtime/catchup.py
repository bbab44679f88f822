"""After the Redis listener lost its subscription: re-send what was stored meanwhile.

While a process's subscription is down (utils/patches/, ``RedisQueuePatches``),
the notifications other processes publish never reach it, and its sockets miss them
live. When it subscribes again, this reads what was stored since shortly before it
went deaf and sends each row whose user has a socket here to that user's room, on
this process only. Nobody reconnects. The margin covers messages that were in flight
when the subscription broke and clock skew between nodes; a client may therefore get
a notification it already had, and deduplicates it by id, as it does for the
dispatcher's re-sends.

An outage long enough to store more than ``CATCH_UP_LIMIT`` rows is left to the
clients' own replay instead: this process's transports are ended, and every client
reconnects with its ``last_id``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask

from utils import protocol
from utils.extensions import db
from utils.notifications.models import Notification, notification_payload
from utils.patches import abort_sessions
from utils.realtime.registry import SocketRegistry

log = logging.getLogger(__name__)

CATCH_UP_MARGIN = 2.0  # seconds before the subscription was seen to fail
CATCH_UP_LIMIT = 5000

_N = Notification.__table__


def since_moment(deaf_since: float) -> datetime:
    """Naive UTC, as the store keeps ``created_at``."""
    return datetime.fromtimestamp(deaf_since - CATCH_UP_MARGIN, UTC).replace(tzinfo=None)


def stored_since(moment: datetime, limit: int) -> list[sa.Row]:
    query = (sa.select(_N.c.id, _N.c.user_id, _N.c.type, _N.c.title, _N.c.body, _N.c.data,
                       _N.c.created_at, _N.c.read_at, _N.c.delivered_at)
             .where(_N.c.created_at >= moment).order_by(_N.c.id).limit(limit + 1))
    with db.engine.connect() as conn:
        return list(conn.execute(query))


def make_catch_up(app: Flask, registry: SocketRegistry, server: Any,
                  limit: int = CATCH_UP_LIMIT) -> Callable[[float, set[int]], set[int]]:
    """``on_resubscribed`` for the Redis manager: returns the ids it re-sent."""

    def catch_up(deaf_since: float, skip: set[int]) -> set[int]:
        users = registry.users()
        if not users:
            return set()
        try:
            with app.app_context():
                rows = stored_since(since_moment(deaf_since), limit)
        except Exception as exc:  # the database too: the clients' replay is all that is left
            log.error("message queue back, but the catch-up read failed (%s)",
                      type(exc).__name__)
            rows = [None] * (limit + 1)
        if len(rows) > limit:
            count = abort_sessions(server.eio, server.sleep)
            log.warning("message queue back after %.0f s: too much to re-send; closed %d "
                        "transport(s) so their clients reconnect and replay",
                        time.time() - deaf_since, count)
            return set()
        sent = set()
        for row in rows:
            if row.user_id in users and row.id not in skip:
                server.emit(protocol.NOTIFICATION, notification_payload(
                    row.id, row.type, row.title, row.body, row.data, row.created_at,
                    row.read_at, row.delivered_at), to=protocol.user_room(row.user_id),
                    namespace="/", ignore_queue=True)
                sent.add(row.id)
        log.warning("message queue back after %.1f s: re-sent %d notification(s) stored "
                    "meanwhile to this process's sockets", time.time() - deaf_since, len(sent))
        return sent

    return catch_up
