"""HTTP API for Web Push: the server's public key, and a user's subscriptions."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify

from routes.api import json_body
from utils.auth.access import require_user
from utils.config import Settings
from utils.edge.errors import ApiError
from utils.notifications.validation import ValidationError
from utils.push import subscriptions
from utils.push.dispatcher import SENDER_KEY
from utils.push.sender import Sender, Target, payload

bp = Blueprint("push", __name__, url_prefix="/api/push")

TEST_PUSH = {"id": 0, "type": "push_test", "title": "Test push",
             "body": "Push works on this device.", "data": {}, "created_at": None,
             "read_at": None, "delivered_at": None}
TEST_PUSH_TTL = 60


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def sender() -> Sender:
    """The app's sender, or 503 push_disabled."""
    found = current_app.extensions.get(SENDER_KEY)
    if found is None:
        raise ApiError(503, "push_disabled",
                       "Web Push is off on this server: set VAPID_PRIVATE_KEY and VAPID_SUBJECT")
    return found


@bp.get("/config")
def push_config():
    """Anyone: whether push is on, and the key for PushManager.subscribe()."""
    return jsonify({"enabled": settings().push_enabled,
                    "vapid_public_key": settings().vapid_public_key
                    if settings().push_enabled else None})


@bp.post("/subscriptions")
@require_user
def subscribe():
    """Users: store this browser's PushSubscription (201 new, 200 known)."""
    sender()
    try:
        new = subscriptions.parse_subscription(json_body(), settings().web_push_endpoint_origins)
    except ValidationError as exc:
        status = 422 if exc.code == subscriptions.NOT_ALLOWED else 400
        raise ApiError(status, exc.code, exc.message) from None
    sub_id, created = subscriptions.subscribe(g.user_id, new,
                                              settings().max_push_subscriptions_per_user)
    return jsonify({"id": sub_id}), 201 if created else 200


@bp.get("/subscriptions")
@require_user
def list_subscriptions():
    """Users: their own subscriptions, by endpoint origin (never the whole URL)."""
    rows = subscriptions.of_user(g.user_id)
    return jsonify({"subscriptions": [subscriptions.listed(row) for row in rows]})


@bp.delete("/subscriptions")
@require_user
def unsubscribe():
    """Users: delete one of their subscriptions by its endpoint."""
    body = json_body()
    endpoint = body.get("endpoint") if isinstance(body, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        raise ApiError(400, "validation_error", 'send {"endpoint": "<the subscription\'s URL>"}')
    if not subscriptions.unsubscribe(g.user_id, endpoint):
        raise ApiError(404, "not_found", "you have no subscription with this endpoint")
    return "", 204


@bp.post("/test")
@require_user
def send_test_push():
    """Users: a test push to each of their subscriptions now, with each answer."""
    push = sender()
    results, sent, gone = [], [], []
    for row in subscriptions.of_user(g.user_id):
        answer = push.send(Target(row.id, row.endpoint, row.p256dh, row.auth),
                           payload(TEST_PUSH), TEST_PUSH_TTL, "high")
        outcome = "failed" if answer.outcome == "retry" else answer.outcome  # no retry here
        if outcome == "sent":
            sent.append(row.id)
        elif outcome == "removed":
            gone.append(row.id)
        results.append({"id": row.id, "origin": subscriptions.endpoint_origin(row.endpoint),
                        "outcome": outcome, "status": answer.status})
    subscriptions.record_success(sent)
    subscriptions.remove_gone(gone)
    return jsonify({"results": results})
