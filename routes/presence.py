"""Presence for producers: ``GET /api/presence?user_id=a&user_id=b``, and the same
question as ``POST /api/presence`` with ``{"user_ids": [...]}`` for ids too many or
too long for a URL (gunicorn refuses a request line over 4,094 bytes)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from routes.body import json_body
from utils.auth.access import require_api_key
from utils.auth.tokens import MAX_USER_ID_LENGTH
from utils.errors import ApiError, ValidationError
from utils.realtime.presence import MAX_USERS, PresenceUnavailable
from utils.services import services

bp = Blueprint("presence", __name__, url_prefix="/api")

RETRY_AFTER = "2"  # seconds: presence skips Redis this long after an error


def presence_request(values: list[Any], field: str) -> list[str]:
    """1 to MAX_USERS user ids, each a string (or, in JSON, an integer, used as its
    decimal string) of 1 to 128 characters, valid Unicode without NUL; duplicates
    dropped, the first keeping its place."""
    if len(values) > MAX_USERS:
        raise ValidationError(f"{field} may hold at most {MAX_USERS} user ids")
    users = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError(f"{field} must hold strings or integers")
        text = str(value)
        if not 0 < len(text) <= MAX_USER_ID_LENGTH:
            raise ValidationError(f"each user id must be 1 to {MAX_USER_ID_LENGTH} characters")
        if "\x00" in text:
            raise ValidationError("a user id must not contain NUL characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("a user id must be valid Unicode (no lone surrogates)") \
                from None
        users.append(text)
    return list(dict.fromkeys(users))


@bp.get("/presence")
@require_api_key
def presence_query():
    """Producers: whether each user has a live socket now, how many, and when last seen."""
    values = request.args.getlist("user_id")
    if not values:
        raise ValidationError("user_id is required: ?user_id=a&user_id=b")
    return _answer(presence_request(values, "user_id"))


@bp.post("/presence")
@require_api_key
def presence_body():
    """Producers: the same as GET, for the ids in ``{"user_ids": [...]}``."""
    body = json_body()
    values = body.get("user_ids") if isinstance(body, dict) else None
    if not isinstance(values, list) or not values:
        raise ValidationError('send {"user_ids": [...]}: 1 to 100 user ids')
    return _answer(presence_request(values, "user_ids"))


def _answer(user_ids: list[str]):
    try:
        users = services().presence.lookup(user_ids)
    except PresenceUnavailable:
        raise ApiError(503, "presence_unavailable",
                       "presence across nodes is unknown now (Redis failed); retry later",
                       {"Retry-After": RETRY_AFTER}) from None
    response = jsonify({"users": [user.to_dict() for user in users]})
    response.headers["Cache-Control"] = "no-store"
    return response
