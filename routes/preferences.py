"""HTTP API for a user's preferences: read, replace (PUT) and merge (PATCH, RFC 7396)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from routes.body import json_body
from utils.auth.access import require_user
from utils.errors import ApiError
from utils.extensions import db
from utils.notifications import preferences

bp = Blueprint("preferences", __name__, url_prefix="/api/preferences")

MERGE_PATCH = "application/merge-patch+json"


@bp.get("")
@require_user
def get_preferences():
    """Users: their whole preference set, defaults filled in."""
    with db.engine.connect() as conn:
        return jsonify(preferences.read(conn, g.user_id).to_dict())


@bp.put("")
@require_user
def put_preferences():
    """Users: replace their preference set; a key left out takes its default."""
    new = preferences.parse(json_body())
    with db.engine.begin() as conn:
        return jsonify(preferences.write(conn, g.user_id, new).to_dict())


@bp.patch("")
@require_user
def patch_preferences():
    """Users: merge a JSON merge patch into their preference set."""
    if request.mimetype not in (MERGE_PATCH, "application/json"):
        raise ApiError(415, "unsupported_media_type",
                       f"send Content-Type: {MERGE_PATCH} (RFC 7396)")
    patch = json_body()
    if not isinstance(patch, dict):
        raise ApiError(400, "validation_error", "a merge patch for preferences must be a "
                       "JSON object")
    with db.engine.begin() as conn:
        current = preferences.read(conn, g.user_id, lock=True)
        merged = preferences.merge_patch(current.to_settings(), patch)
        merged.pop("updated_at", None)
        return jsonify(preferences.write(conn, g.user_id, preferences.parse(merged)).to_dict())
