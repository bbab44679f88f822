"""Bearer credentials: how they are read, and how a shared secret is compared."""

from __future__ import annotations

import hmac

from flask import request

from utils.errors import ApiError


def bearer(value: object) -> str | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` value, or None."""
    if not isinstance(value, str):
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def same_secret(offered: str | None, expected: str | None) -> bool:
    """Constant-time comparison; a missing side never matches."""
    return bool(offered and expected) and hmac.compare_digest(offered.encode(),
                                                              expected.encode())


def require_bearer_secret(expected: str | None, realm: str, code: str, variable: str) -> None:
    """Checks ``Authorization: Bearer <expected>`` (RFC 6750 §3.1): no credentials is
    401 ``<code>_missing``; wrong ones are 401 ``<code>_invalid`` with
    ``error="invalid_token"``. 403 is kept for a valid credential lacking a right."""
    offered = bearer(request.headers.get("Authorization"))
    if not offered:
        raise ApiError(401, f"{code}_missing", f"send Authorization: Bearer <{variable}>",
                       {"WWW-Authenticate": f'Bearer realm="{realm}"'})
    if not same_secret(offered, expected):
        raise ApiError(401, f"{code}_invalid", f"the credentials are not {variable}",
                       {"WWW-Authenticate": f'Bearer realm="{realm}", error="invalid_token"'})
