"""Who is asking: user tokens for sockets and the inbox, the API key for producers."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any
from urllib.parse import parse_qs

from flask import current_app, g, request
from flask_socketio import ConnectionRefusedError

from utils.errors import ApiError
from utils.token import TokenError, VerifiedToken, verify_access_token

REFUSAL_MESSAGE = "unauthorized"


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


def extract_token(auth: Any, environ: Mapping[str, Any]) -> object:
    """The token a connecting socket offers: auth.token, then the Authorization
    header, then ?token=. Whatever the client sent for a user id is ignored."""
    if isinstance(auth, dict) and auth.get("token") is not None:
        return auth["token"]
    header = bearer(environ.get("HTTP_AUTHORIZATION"))
    if header:
        return header
    query = environ.get("QUERY_STRING")
    if isinstance(query, str) and "token=" in query:
        values = parse_qs(query, max_num_fields=100).get("token")
        if values and values[0]:
            return values[0]
    return None


def authenticate_socket(auth: Any, environ: Mapping[str, Any]) -> VerifiedToken:
    """The verified user of a connecting socket, or ConnectionRefusedError."""
    try:
        token = extract_token(auth, environ)
        if token is not None and not isinstance(token, str):
            raise TokenError("token_invalid", "token must be a string")
        return verify_access_token(token)
    except TokenError as exc:
        raise ConnectionRefusedError(REFUSAL_MESSAGE, {"code": exc.code}) from None
    except ValueError:  # parse_qs: too many fields
        raise ConnectionRefusedError(REFUSAL_MESSAGE, {"code": "token_invalid"}) from None


def require_user(view: Callable) -> Callable:
    """Inbox routes: a user JWT as Bearer; sets ``g.user_id``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        token = bearer(request.headers.get("Authorization"))
        try:
            verified = verify_access_token(token)
        except TokenError as exc:
            raise ApiError(401, exc.code, exc.message,
                           {"WWW-Authenticate": 'Bearer realm="notifications"'}) from None
        g.user_id = verified.user_id
        return view(*args, **kwargs)

    return wrapper


def require_api_key(view: Callable) -> Callable:
    """Producer routes: ``Authorization: Bearer $NOTIFY_API_KEY``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        expected = current_app.config["SETTINGS"].notify_api_key
        if not expected:
            raise ApiError(503, "producer_disabled", "NOTIFY_API_KEY is not configured")
        require_bearer_secret(expected, "notifications", "api_key", "NOTIFY_API_KEY")
        return view(*args, **kwargs)

    return wrapper
