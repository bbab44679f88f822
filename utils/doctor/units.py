"""How times appear in evidence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def stamp(epoch: Any) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS UTC`` (its repr when it is not one)."""
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return repr(epoch)
