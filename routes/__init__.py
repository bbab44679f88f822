"""HTTP routes (one blueprint a module) and the Socket.IO namespace (events.py's
Events, which create_app registers on each app's server after socketio.init_app)."""

from __future__ import annotations

from flask import Flask


def register_routes(app: Flask) -> None:
    """The blueprints, and the error shape for every HTTP error."""
    from routes import api, debug, health, metrics, openapi, preferences, presence, push
    from utils.edge.error_handlers import register_error_handlers

    for blueprint in (api.bp, push.bp, preferences.bp, presence.bp, health.bp, metrics.bp,
                      openapi.bp, debug.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
