"""HTTP API: the producer endpoint and the user's inbox."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, g, jsonify, request

from routes.body import json_body
from utils.auth.access import require_api_key, require_user
from utils.errors import ApiError, ItemsInvalid, error_response
from utils.notifications import store
from utils.notifications.notifier import (
    BULK,
    Delivery,
    IdempotencyConflict,
    fingerprint,
    notify,
    notify_many,
    push_unread_count,
)
from utils.notifications.validation import (
    bulk_request,
    notification_request,
    page_limit,
    positive_id,
    read_request,
)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_IDEMPOTENCY_KEY = 255
# A bulk request's body: up to 1,000 objects of about 1 KiB each (the app's limit for
# every other body is 256 KiB, app.py).
MAX_BULK_BODY = 1024 * 1024


def idempotency_key() -> str | None:
    """The request's Idempotency-Key, or None; a 400 when it breaks the rule."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise ApiError(400, "validation_error",
                       f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    return key


def created(delivery: Delivery):
    """201 with the delivery's answer, flagged when it is a replay."""
    response = jsonify(delivery.response)
    response.status_code = 201
    if delivery.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def deliver_once(body, scope: str, deliver: Callable[[str | None, str | None], Delivery]):
    """``deliver(key, request_fingerprint)`` under the request's Idempotency-Key (the
    body's fingerprint in ``scope``, the route's), answered 201; 422 when the key came
    before with another body."""
    key = idempotency_key()
    try:
        delivery = deliver(key, fingerprint(body, scope) if key else None)
    except IdempotencyConflict:
        raise ApiError(422, "idempotency_key_reused",
                       "this Idempotency-Key was used with a different request body") from None
    return created(delivery)


@bp.post("/notifications")
@require_api_key
def create_notifications():
    """Producers: store and deliver a notification to one or many users."""
    body = json_body()
    req = notification_request(body)
    return deliver_once(body, "", lambda key, request_fingerprint: notify(
        req, idempotency_key=key, request_fingerprint=request_fingerprint))


@bp.post("/notifications/bulk")
@require_api_key
def create_notifications_bulk():
    """Producers: store and deliver up to 1,000 notification objects in one request,
    all or nothing, answered one result per object in request order."""
    request.max_content_length = MAX_BULK_BODY
    body = json_body()
    try:
        objects = bulk_request(body)
    except ItemsInvalid as exc:
        return error_response(400, exc.code, exc.message, items=exc.items)
    return deliver_once(body, BULK, lambda key, request_fingerprint: notify_many(
        objects, idempotency_key=key, request_fingerprint=request_fingerprint))


@bp.get("/notifications")
@require_user
def list_notifications():
    """Users: their inbox, newest first, paged with ``before``."""
    limit = page_limit(request.args.get("limit"))
    before_raw = request.args.get("before")
    before = positive_id(before_raw, "before") if before_raw else None
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
    ids = read_request(json_body())
    updated = store.mark_read(g.user_id, ids)
    count = store.unread_count(g.user_id)
    push_unread_count(g.user_id, count)
    return jsonify({"updated": updated, "unread_count": count})
