"""HTTP API: the producer endpoint and the user's inbox."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import Blueprint, g, jsonify, request

from utils.auth.access import require_api_key, require_user
from utils.edge.errors import ApiError
from utils.notifications import store
from utils.notifications.notifier import (
    IdempotencyConflict,
    fingerprint,
    notify_users,
    push_unread_count,
)
from utils.notifications.validation import (
    ValidationError,
    notification_request,
    page_limit,
    positive_id,
    read_request,
)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_IDEMPOTENCY_KEY = 255


def _not_json(constant: str) -> NoReturn:
    # Python's json reads NaN, Infinity and -Infinity; JSON and browsers have no such values.
    raise ValidationError(f"the body holds {constant}, which JSON does not allow; "
                          "send a number or null")


def _body_bytes() -> bytes:
    data = request.get_data()
    limit = request.max_content_length
    # A chunked body has no Content-Length to check first: werkzeug stops reading it at
    # the limit and returns what it read, cut short. A byte beyond means too large.
    if request.content_length is None and limit is not None and len(data) >= limit \
            and request.environ["wsgi.input"].read(1):
        raise ApiError(413, "payload_too_large", f"the body is larger than {limit // 1024} KiB")
    return data


def json_body() -> Any:
    """The request's JSON body, or a contract-shaped 400/413/415."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    try:
        body = json.loads(_body_bytes(), parse_constant=_not_json)
    except ValidationError as exc:
        raise ApiError(400, exc.code, exc.message) from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    except ValueError:  # not JSON, or not UTF-8
        body = None
    if body is None:
        raise ApiError(400, "invalid_json", "the body is not valid JSON")
    return body


def _validated(fn, *args):
    try:
        return fn(*args)
    except ValidationError as exc:
        raise ApiError(400, exc.code, exc.message) from None


@bp.post("/notifications")
@require_api_key
def create_notifications():
    """Producers: store and deliver a notification to one or many users."""
    body = json_body()
    req = _validated(notification_request, body)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise ApiError(400, "validation_error",
                       f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    try:
        delivery = notify_users(
            req.user_ids, req.type, req.title, req.body, req.data,
            idempotency_key=key, request_fingerprint=fingerprint(body) if key else None,
            push=req.push, urgency=req.urgency, topic=req.topic,
        )
    except IdempotencyConflict:
        raise ApiError(422, "idempotency_key_reused",
                       "this Idempotency-Key was used with a different request body") from None
    response = jsonify(delivery.response)
    response.status_code = 201
    if delivery.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("/notifications")
@require_user
def list_notifications():
    """Users: their inbox, newest first, paged with ``before``."""
    limit = _validated(page_limit, request.args.get("limit"))
    before_raw = request.args.get("before")
    before = _validated(positive_id, before_raw, "before") if before_raw else None
    unread_only = request.args.get("unread", "").lower() in ("1", "true", "yes")
    rows, next_before = store.page(g.user_id, before, limit, unread_only)
    return jsonify({
        "notifications": [row.to_dict() for row in rows],
        "next_before": next_before,
        "unread_count": store.unread_count(g.user_id),
    })


@bp.get("/notifications/unread-count")
@require_user
def get_unread_count():
    """Users: how many of their notifications are unread."""
    return jsonify({"unread_count": store.unread_count(g.user_id)})


@bp.post("/notifications/read")
@require_user
def mark_notifications_read():
    """Users: mark some or all of their notifications read."""
    ids = _validated(read_request, json_body())
    updated = store.mark_read(g.user_id, ids)
    count = store.unread_count(g.user_id)
    push_unread_count(g.user_id, count)
    return jsonify({"updated": updated, "unread_count": count})
