"""The Engine.IO transports a server serves, and how the doctor learns them.

A server run with ``SOCKETIO_TRANSPORTS=websocket`` (the fix for sessions split
across replicas) refuses every polling request with ``400 Invalid transport``.
That is its documented configuration, not a fault: once the doctor knows it, it
checks such a server over WebSocket only. It learns it from ``--transports``,
else from ``/healthz`` (this backend lists its transports there), else from that
400 answer to its first polling request.
"""

from __future__ import annotations

from typing import Any

from utils.doctor.transport import Reply

POLLING, WEBSOCKET = "polling", "websocket"
BOTH = (POLLING, WEBSOCKET)
WEBSOCKET_ONLY = (WEBSOCKET,)
CHOICES = (BOTH, WEBSOCKET_ONLY)  # what SOCKETIO_TRANSPORTS accepts on the server
INVALID_TRANSPORT = "Invalid transport"  # python-engineio's answer to a refused transport

FROM_FLAG = "--transports"
FROM_HEALTHZ = "/healthz"
FROM_REFUSAL = "its 400 Invalid transport to a polling handshake"


def parse(text: str) -> tuple[str, ...] | None:
    """``websocket`` or ``polling,websocket`` (any order) as a canonical tuple; None
    for anything the server would not accept."""
    named = {part.strip().lower() for part in text.split(",") if part.strip()}
    found = tuple(t for t in BOTH if t in named)
    return found if found in CHOICES and len(named) == len(found) else None


def from_healthz(body: Any) -> tuple[str, ...] | None:
    """The transports a /healthz body lists, when it is this backend's."""
    listed = body.get("transports") if isinstance(body, dict) else None
    if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
        return None
    return parse(",".join(listed))


def refuses_polling(reply: Reply) -> bool:
    """python-engineio's answer to a polling request on a WebSocket-only server."""
    return reply.status == 400 and INVALID_TRANSPORT in reply.text()


def describe(transports: tuple[str, ...]) -> str:
    return ",".join(transports)
