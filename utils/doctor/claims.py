"""The claims of --token, decoded without verification: only to show exp and aud."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from utils.doctor.units import stamp


def decode_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT; raises ValueError when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("--token is not a JWT (three dot-separated parts)")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        raise ValueError("--token's payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise ValueError("--token's payload is not a JSON object")
    return claims


def seconds_left(claims: dict[str, Any]) -> float | None:
    exp = claims.get("exp")
    return exp - time.time() if isinstance(exp, int | float) else None


def describe_claims(claims: dict[str, Any]) -> str:
    """``exp … (in 53 min), aud …`` for the evidence."""
    exp, aud, left = claims.get("exp"), claims.get("aud"), seconds_left(claims)
    when = "" if left is None else f" ({'expired' if left < 0 else f'in {left / 60:.0f} min'})"
    return (f"exp {stamp(exp) if exp is not None else 'none'}{when}, aud "
            f"{json.dumps(aud) if aud is not None else 'none'} (decoded, not verified)")
