"""HTTP routes and Socket.IO event handlers (events.py, bound in
utils/realtime/state.py)."""

from __future__ import annotations

from flask import Flask


def register_routes(app: Flask) -> None:
    """The blueprints, and the error shape for every HTTP error."""
    from routes import api, debug, health, metrics, openapi, push
    from utils.edge.error_handlers import register_error_handlers

    for blueprint in (api.bp, push.bp, health.bp, metrics.bp, openapi.bp, debug.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
