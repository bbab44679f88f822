"""Emit a notification from another Python service, without importing this app.

    pip install "python-socketio==5.18.1" "redis==8.1.0"
    REDIS_URL=redis://... python examples/emit_from_service.py USER_ID "Title" [--body TEXT]

It publishes on the web nodes' Redis channel (``notifications``) to the room
``user:<id>``, exactly as the web app's own emits do, so every socket of that user
on every node receives a ``notification`` event.

Such an emit is NOT stored: the user sees it only if a socket is connected at that
moment, it has no id from the database, it never counts as unread, and a client
that reconnects with ``last_id`` cannot replay it. The preferred producer path is
``POST /api/notifications`` (stored first, then emitted, replayable, idempotent).
Use this only for ephemeral signals, or after storing the row yourself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import socketio

CHANNEL = "notifications"  # utils.realtime.replay: make_manager(..., "notifications")


def user_room(user_id: str) -> str:
    """The room every socket of ``user_id`` joins (utils.protocol.user_room)."""
    return f"user:{user_id}"


def make_emitter(redis_url: str) -> socketio.RedisManager:
    """A write-only client manager: it publishes and never listens."""
    return socketio.RedisManager(redis_url, channel=CHANNEL, write_only=True)


def emit_notification(
    emitter: socketio.RedisManager,
    user_id: str,
    title: str,
    type: str = "service",
    body: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish one ``notification`` event in the contract's shape; returns it.

    Its ``id`` is null, because no row exists: clients must advance their replay
    cursor (``last_id``) only on integer ids."""
    payload = {
        "id": None,
        "type": type,
        "title": title,
        "body": body,
        "data": data or {},
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "read_at": None,
    }
    emitter.emit("notification", payload, to=user_room(user_id), namespace="/")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user_id")
    parser.add_argument("title")
    parser.add_argument("--type", default="service")
    parser.add_argument("--body", default=None)
    args = parser.parse_args(argv)
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        print("REDIS_URL is not set", file=sys.stderr)
        return 2
    emitter = make_emitter(redis_url)
    started = time.monotonic()
    emit_notification(emitter, args.user_id, args.title, args.type, args.body)
    print(f"published to {user_room(args.user_id)} in {time.monotonic() - started:.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
