"""The app's services, one typed object: ``create_app`` builds each part once and
stores them here; code reads them with ``services()``. It replaces string keys into
``app.extensions`` (only Flask's own extensions, and this one, live there).

A leaf: at run time it imports flask only. The field types name higher layers for
the type checker alone (``exclude_type_checking_imports`` in pyproject.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from utils.auth.tokens import TokenService
    from utils.config import Settings
    from utils.db.group_commit import GroupCommit
    from utils.edge.limits import HttpLimits, SocketLimits
    from utils.edge.origins import OriginPolicy
    from utils.notifications.notifier import NotifyRequest, Stored
    from utils.notifications.receipts import Backlog, Receipt
    from utils.outbox.consumer import OutboxConsumer
    from utils.push.dispatcher import PushDispatcher
    from utils.push.sender import Sender
    from utils.push.sends import CallsUnderWay
    from utils.realtime.drain import DrainLayer
    from utils.realtime.presence import Presence
    from utils.realtime.state import Realtime

KEY = "notifier"


@dataclass  # not frozen: a test may swap a part (the dispatcher, say)
class Services:
    settings: Settings
    tokens: TokenService
    origins: OriginPolicy  # built once: Socket.IO's and CORS's allowlist
    realtime: Realtime  # registry, replay guard, sweepers, connect gate, admission, probe
    socket_limits: SocketLimits
    http_limits: HttpLimits
    writes: GroupCommit[NotifyRequest, Stored]  # notifications, grouped into transactions
    receipts: GroupCommit[Receipt, int]  # delivery receipts, likewise
    receipt_backlog: Backlog  # the receipts waiting to be written, bounded
    push_sender: Sender | None  # None: Web Push is off
    dispatcher: PushDispatcher
    test_push_calls: CallsUnderWay
    openapi: bytes  # the OpenAPI document, bundled once at start
    drain: DrainLayer  # the WebSockets a SIGTERM drain shuts down
    presence: Presence  # who has a live socket: this process's, or every node's via Redis
    outbox: OutboxConsumer | None = None  # None: OUTBOX_ENABLED is off


def services(app: Flask | None = None) -> Services:
    """The services of ``app``, or of the current app."""
    return (app or current_app).extensions[KEY]
