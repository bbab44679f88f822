"""HTTP routes and Socket.IO event handlers (events.py, bound in
utils/realtime/state.py)."""

from __future__ import annotations

from flask import Flask


def register_routes(app: Flask) -> None:
    """The blueprints, the error shape for every HTTP error, and CORS on /api."""
    from routes import api, debug, health, metrics, openapi, push
    from utils.edge.error_handlers import register_error_handlers
    from utils.edge.origins import register_cors
    from utils.realtime.state import ORIGINS_KEY

    for blueprint in (api.bp, push.bp, health.bp, metrics.bp, openapi.bp, debug.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    register_cors(app, app.extensions[ORIGINS_KEY])
