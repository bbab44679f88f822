"""Engine.IO 4 and Socket.IO 5 packets, as text: just the ones the doctor sends and reads.

An Engine.IO packet is one type character and its data; a long-polling payload
joins packets with a record separator. A Socket.IO packet rides in an Engine.IO
MESSAGE: "4" + its own type character + an optional JSON payload, all for the
default namespace "/".
"""

from __future__ import annotations

import json
from typing import Any

# Engine.IO packet types.
OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0", "1", "2", "3", "4", "5", "6"
RECORD_SEPARATOR = "\x1e"
PROBE = "probe"  # the payload of the ping/pong that tests an upgraded WebSocket

# Socket.IO packet types, each already inside an Engine.IO MESSAGE.
SIO_CONNECT = MESSAGE + "0"
SIO_EVENT = MESSAGE + "2"
SIO_CONNECT_ERROR = MESSAGE + "4"

PROBE_PING, PROBE_PONG = PING + PROBE, PONG + PROBE


def split_payload(payload: str) -> list[str]:
    """The packets of one long-polling response body."""
    return [p for p in payload.split(RECORD_SEPARATOR) if p] if payload else []


def open_info(packet: str) -> dict[str, Any] | None:
    """The handshake data of an OPEN packet (sid, upgrades, ping values), else None."""
    if not packet.startswith(OPEN + "{"):
        return None
    info = _json(packet[1:])
    return info if isinstance(info, dict) and "sid" in info else None


def connect(auth: dict[str, Any] | None) -> str:
    return SIO_CONNECT + (json.dumps(auth) if auth else "")


def event(name: str, *args: Any, ack: int | None = None) -> str:
    return SIO_EVENT + ("" if ack is None else str(ack)) + json.dumps([name, *args])


def connect_error(packet: str) -> tuple[str | None, str | None] | None:
    """(code, message) of a CONNECT_ERROR, or None for any other packet."""
    if not packet.startswith(SIO_CONNECT_ERROR):
        return None
    data = _json(packet[len(SIO_CONNECT_ERROR):])
    if not isinstance(data, dict):
        return None, None
    detail = data.get("data")
    return (detail.get("code") if isinstance(detail, dict) else None), data.get("message")


def event_of(packet: str) -> tuple[str, Any] | None:
    """(name, first argument) of an EVENT, or None for any other packet."""
    if not packet.startswith(SIO_EVENT):
        return None
    body = packet[len(SIO_EVENT):].lstrip("0123456789")  # an ack id may come first
    data = _json(body)
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        return None
    return data[0], data[1] if len(data) > 1 else None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
