"""Who is asking: user tokens for sockets and the inbox, the API key for producers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any
from urllib.parse import parse_qs

from flask import g, request
from flask_socketio import ConnectionRefusedError

from utils.auth.credentials import bearer, require_bearer_secret
from utils.auth.tokens import TokenError, VerifiedToken, verify_access_token
from utils.errors import ApiError
from utils.services import services

REFUSAL_MESSAGE = "unauthorized"


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
            # RFC 6750 3.1: a token that was offered and failed is invalid_token.
            error = ', error="invalid_token"' if token else ""
            raise ApiError(401, exc.code, exc.message,
                           {"WWW-Authenticate": f'Bearer realm="notifications"{error}'}) from None
        g.user_id = verified.user_id
        return view(*args, **kwargs)

    return wrapper


def require_api_key(view: Callable) -> Callable:
    """Producer routes: ``Authorization: Bearer $NOTIFY_API_KEY``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        expected = services().settings.notify_api_key
        if not expected:
            raise ApiError(503, "producer_disabled", "NOTIFY_API_KEY is not configured")
        require_bearer_secret(expected, "notifications", "api_key", "NOTIFY_API_KEY")
        return view(*args, **kwargs)

    return wrapper
