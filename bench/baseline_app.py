"""The baseline: stock Flask-SocketIO on eventlet, configured as the incident's fix.

    gunicorn --worker-class eventlet -w 1 bench.baseline_app:app

An explicit ``cors_allowed_origins`` list, and nothing else: no token check, no
persistence, no tuning. A socket joins ``user:<auth.user_id>``; POST
/api/notifications takes the product's body and emits ``notification`` to each
user's room. This is what the product is compared against, so it stays stock.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from flask import Flask, jsonify, request
from flask_socketio import SocketIO, join_room

app = Flask(__name__)
socketio = SocketIO(app, async_mode="eventlet", cors_allowed_origins=["http://localhost:3000"])
_ids = itertools.count(1)


@socketio.on("connect")
def on_connect(auth: Any = None) -> bool:
    """Load generator: join the user's room."""
    if not isinstance(auth, dict) or auth.get("user_id") is None:
        return False
    user = str(auth["user_id"])
    join_room(f"user:{user}")
    socketio.emit("auth_success", {"user_id": user, "unread_count": 0}, to=request.sid)
    return True


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.post("/api/notifications")
def create_notifications():
    body = request.get_json(silent=True) or {}
    users = body.get("user_ids") or [body.get("user_id")]
    created_at = datetime.now(UTC).isoformat()
    out = []
    for user in users:
        payload = {"id": next(_ids), "type": body.get("type"), "title": body.get("title"),
                   "body": body.get("body"), "data": body.get("data") or {},
                   "created_at": created_at, "read_at": None}
        socketio.emit("notification", payload, to=f"user:{user}")
        out.append({"id": payload["id"], "user_id": str(user)})
    return jsonify(notifications=out), 201
