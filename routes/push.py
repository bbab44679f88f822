"""HTTP API for Web Push: the server's public key, and a user's subscriptions."""

from __future__ import annotations

import math

from flask import Blueprint, g, jsonify

from routes.body import json_body
from utils.auth.access import require_user
from utils.config import Settings
from utils.errors import ApiError
from utils.extensions import socketio
from utils.notifications.validation import MAX_ID
from utils.push import subscriptions
from utils.push.sender import Sender, Target, payload
from utils.push.sends import send_each, settle_subscriptions
from utils.services import services

bp = Blueprint("push", __name__, url_prefix="/api/push")

TEST_PUSH = {"id": 0, "type": "push_test", "title": "Test push",
             "body": "Push works on this device.", "data": {}, "created_at": None,
             "read_at": None, "delivered_at": None}
TEST_PUSH_TTL = 60


def settings() -> Settings:
    return services().settings


def sender() -> Sender:
    """The app's sender, or 404 push_disabled: a server configured without push is
    not "temporarily unavailable" (a 503 would page whoever watches 5xx)."""
    found = services().push_sender
    if found is None:
        raise ApiError(404, "push_disabled",
                       "Web Push is off on this server: its operator sets VAPID_PRIVATE_KEY "
                       "and VAPID_SUBJECT (`flask --app app vapid-keys` makes a key)")
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
    new = subscriptions.parse_subscription(json_body(), settings().web_push_endpoint_origins)
    sub_id, created = subscriptions.subscribe(g.user_id, new,
                                              settings().max_push_subscriptions_per_user)
    return jsonify({"id": sub_id}), 201 if created else 200


@bp.get("/subscriptions")
@require_user
def list_subscriptions():
    """Users: their own subscriptions, by endpoint origin (never the whole URL)."""
    rows = subscriptions.of_user(g.user_id)
    return jsonify({"subscriptions": [subscriptions.listed(row) for row in rows]})


@bp.patch("/subscriptions/<int:id>")
@require_user
def update_subscription(id: int):
    """Users: turn one of their subscriptions on or off; one turned off is kept but
    gets no pushes."""
    body = json_body()
    if not isinstance(body, dict) or set(body) != {"enabled"} \
            or not isinstance(body["enabled"], bool):
        raise ApiError(400, "validation_error", 'send {"enabled": true} or {"enabled": false}')
    row = subscriptions.set_enabled(g.user_id, id, body["enabled"]) if id <= MAX_ID else None
    if row is None:
        raise ApiError(404, "not_found", "you have no subscription with this id")
    return jsonify(subscriptions.listed(row))


@bp.delete("/subscriptions")
@require_user
def unsubscribe():
    """Users: delete one of their subscriptions by its endpoint."""
    body = json_body()
    if not isinstance(body, dict) or "endpoint" not in body:
        raise ApiError(400, "validation_error", 'send {"endpoint": "<the subscription\'s URL>"}')
    endpoint = subscriptions.endpoint_text(body["endpoint"])
    if not subscriptions.unsubscribe(g.user_id, endpoint):
        raise ApiError(404, "not_found", "you have no subscription with this endpoint")
    return "", 204


@bp.post("/test")
@require_user
def send_test_push():
    """Users: a test push to each of their subscriptions that is turned on, now, with
    each answer; 429 while another of theirs is under way."""
    push = sender()
    with services().test_push_calls.hold(g.user_id) as allowed:
        if not allowed:
            raise ApiError(429, "rate_limited", "a test push is already under way; try again "
                           "when it ends", {"Retry-After": str(math.ceil(push.deadline))})
        rows = [row for row in subscriptions.of_user(g.user_id) if row.enabled]
        answers = send_each(socketio.start_background_task, push,
                            [Target(row.id, row.endpoint, row.p256dh, row.auth) for row in rows],
                            payload(TEST_PUSH), TEST_PUSH_TTL, "high")
    results, sent, gone = [], [], []
    for row, answer in zip(rows, answers, strict=True):
        outcome = "failed" if answer.outcome == "retry" else answer.outcome  # no retry here
        if outcome == "sent":
            sent.append(row.id)
        elif outcome == "removed":
            gone.append(row.id)
        results.append({"id": row.id, "origin": subscriptions.endpoint_origin(row.endpoint),
                        "outcome": outcome, "status": answer.status})
    settle_subscriptions(sent_to=sent, gone=gone)
    return jsonify({"results": results})

