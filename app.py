"""The notification backend: Flask + Flask-SocketIO.

``gunicorn --worker-class eventlet -w 1 app:app`` serves the module-level ``app``
(``gevent`` is the maintained alternative); ``python app.py`` runs the same app on
eventlet's or gevent's own server for development.
"""

import os
import warnings

# eventlet warns on import with a multi-line banner; the server logs one line about
# it instead (entrypoints/runtime.py), and CLI commands say nothing.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

if __name__ == "__main__":
    # Patch before anything imports socket or threading. gunicorn's eventlet and
    # gevent workers patch for themselves before they import this module.
    if os.environ.get("ASYNC_MODE", "eventlet").strip().lower() == "gevent":
        from gevent import monkey

        monkey.patch_all()
    else:
        import eventlet

        eventlet.monkey_patch()

import sys  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask  # noqa: E402

# Before any module imports python-socketio: utils/extensions.py decides whether it
# may import redis (only with REDIS_URL set).
import utils.extensions  # noqa: E402, F401
from utils.config import ConfigError, Settings, load_settings  # noqa: E402
from utils.config.worker import check_worker  # noqa: E402
from utils.patches import PatchedVersionError, check_versions  # noqa: E402

ROOT = Path(__file__).resolve().parent


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` overrides environment variables by name, e.g.
    ``create_app({"APP_ENV": "production", "DATABASE_URL": "sqlite://"})``."""
    from entrypoints.cli import register_commands
    from routes import register_routes
    from routes.events import register as register_events
    from routes.openapi import document
    from utils.auth.tokens import TokenService
    from utils.db.engine import init_database
    from utils.db.group_commit import GroupCommit
    from utils.edge.limits import SocketLimits, register_limits
    from utils.edge.origins import OriginPolicy, register_cors
    from utils.edge.stack import wsgi_stack
    from utils.extensions import socketio
    from utils.notifications.notifier import MAX_GROUP_ROWS, store_group
    from utils.notifications.receipts import (
        MAX_GROUP_IDS,
        RECEIPT_WRITES,
        Backlog,
        linger,
        write_receipts,
    )
    from utils.ops.logs import configure_logging
    from utils.outbox.consumer import init_outbox
    from utils.push.dispatcher import init_push
    from utils.push.sends import CallsUnderWay
    from utils.realtime.drain import DrainLayer
    from utils.realtime.presence import make_presence
    from utils.realtime.state import init_realtime
    from utils.services import KEY, Services

    check_versions()
    env = {**os.environ, **{k: str(v) for k, v in (config or {}).items()}}
    settings = load_settings(env, ROOT / "instance")
    check_worker(settings.async_mode)
    app = Flask(__name__, instance_path=settings.instance_path)
    app.config.update(MAX_CONTENT_LENGTH=256 * 1024, JSON_SORT_KEYS=False)
    configure_logging(settings.log_level, settings.secrets_to_redact())
    init_database(app, settings)
    # The one wiring point: each part is built here, once, and handed to what uses it.
    origins = OriginPolicy(settings.frontend_urls)  # Socket.IO's allowlist, and CORS's
    realtime = init_realtime(app, settings, origins)
    register_events(socketio)  # after init_app: on this app's server
    sender, dispatcher = init_push(app, settings)
    http_limits = register_limits(app, settings)
    socket_limits = SocketLimits(settings)
    register_routes(app)
    register_cors(app, origins)
    app.wsgi_app, drain = wsgi_stack(app.wsgi_app, settings,
                                     has_room=realtime.admission.has_room,
                                     socket_limits=socket_limits, drain_layer=DrainLayer)
    app.extensions[KEY] = Services(
        settings=settings, tokens=TokenService(settings), origins=origins, realtime=realtime,
        socket_limits=socket_limits, http_limits=http_limits,
        writes=GroupCommit(store_group, MAX_GROUP_ROWS),
        receipts=GroupCommit(write_receipts, MAX_GROUP_IDS, linger, max_writes=RECEIPT_WRITES),
        receipt_backlog=Backlog(),
        push_sender=sender, dispatcher=dispatcher, test_push_calls=CallsUnderWay(),
        openapi=document(), drain=drain, outbox=init_outbox(app, settings),
        presence=make_presence(realtime.registry, settings.redis_url, settings.ping_interval,
                               socketio.start_background_task, socketio.sleep))
    register_commands(app)
    _announce_generated(settings)
    return app


def _announce_generated(settings: Settings) -> None:
    if not settings.generated:
        return
    # Printed once, when generated; later starts read them from instance/.
    print(f"Generated development secrets in {settings.instance_path}/:", file=sys.stderr)
    if "NOTIFY_API_KEY" in settings.generated:
        print(f"  NOTIFY_API_KEY={settings.notify_api_key}", file=sys.stderr)
    if "VAPID_PRIVATE_KEY" in settings.generated:
        print("  VAPID_PRIVATE_KEY (kept in instance/vapid_private_key.txt) for Web Push",
              file=sys.stderr)
    if "JWT_SECRET_KEY" in settings.generated:
        print("  JWT_SECRET_KEY (kept in instance/jwt_secret_key.txt); mint a token with:"
              " flask --app app create-token USER_ID", file=sys.stderr)


def _load() -> Flask:
    try:
        return create_app()
    except (ConfigError, PatchedVersionError) as exc:
        # One clear line, then exit 4: gunicorn's "App failed to load" status, which
        # makes the master halt instead of respawning workers forever.
        kind = "configuration error" if isinstance(exc, ConfigError) else "cannot start"
        print(f"{kind}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(4) from None


app = _load()

if __name__ == "__main__":
    from entrypoints.devserver import serve

    serve(app)
