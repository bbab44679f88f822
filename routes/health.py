"""Operations: liveness, readiness."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from utils import __version__
from utils.db.schema import schema_state
from utils.extensions import db, socketio
from utils.services import services

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


def _monkey_patched() -> bool:
    mode = socketio.async_mode
    try:
        if mode == "eventlet":
            import eventlet.patcher

            return bool(eventlet.patcher.is_monkey_patched("socket"))
        if mode == "gevent":
            import gevent.monkey

            return bool(gevent.monkey.is_module_patched("socket"))
    except Exception:
        return False
    return False


@bp.get("/healthz")
def healthz():
    """Anyone: liveness, with the facts an operator checks first. No I/O."""
    settings = services().settings
    return jsonify({
        "status": "ok",
        "async_mode": socketio.async_mode,
        "monkey_patched": _monkey_patched(),
        "transports": list(settings.transports),
        "ping_interval": settings.ping_interval,
        "ping_timeout": settings.ping_timeout,
        "message_queue": "redis" if settings.redis_url else "disabled",
        "environment": settings.app_env,
        "version": __version__,
    })


@bp.get("/readyz")
def readyz():
    """Anyone: whether the database answers with the schema this code needs, and the
    message queue answers. A schema behind the code's migrations is not ready, with
    the reason: every request would fail until `flask db upgrade` runs."""
    checks: dict[str, str] = {"database": "ok", "schema": "ok", "message_queue": "disabled"}
    reason = None
    try:
        state = schema_state(db.session.connection())
        if state.behind:
            checks["schema"], reason = "behind", state.describe()
    except Exception as exc:
        db.session.rollback()
        log.warning("readiness: database error: %s", type(exc).__name__)
        checks["database"] = checks["schema"] = "error"
    probe = services().realtime.queue_probe
    if probe is not None:
        checks["message_queue"] = "ok" if probe() else "error"
    ok = all(v in ("ok", "disabled") for v in checks.values())
    answer = {"status": "ok" if ok else "error", **checks}
    if reason:
        answer["reason"] = reason
    return jsonify(answer), (200 if ok else 503)
