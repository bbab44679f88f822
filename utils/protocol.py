"""The names of this service's Socket.IO interface: the events the server emits and
the room each user's sockets join (docs/API.md describes their payloads)."""

from __future__ import annotations

NOTIFICATION = "notification"
UNREAD_COUNT = "unread_count"
AUTH_SUCCESS = "auth_success"
SYNC_COMPLETE = "sync_complete"
TOKEN_EXPIRED = "token_expired"


def user_room(user_id: str) -> str:
    """The room every socket of ``user_id`` joins; producers emit to it."""
    return f"user:{user_id}"
