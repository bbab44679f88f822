"""The notification backend: Flask + Flask-SocketIO.

``gunicorn --worker-class eventlet -w 1 app:app`` serves the module-level ``app``;
``python app.py`` runs the same app on eventlet's own server for development.
"""

import os

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
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

from flask import Flask  # noqa: E402

from utils.config import ConfigError, Settings, load_settings  # noqa: E402
from utils.extensions import db, migrate, socketio  # noqa: E402

ROOT = Path(__file__).resolve().parent


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` overrides environment variables by name, e.g.
    ``create_app({"APP_ENV": "production", "DATABASE_URL": "sqlite://"})``."""
    env = {**os.environ, **{k: str(v) for k, v in (config or {}).items()}}
    instance_path = Path(env.get("INSTANCE_PATH") or ROOT / "instance").resolve()
    settings = load_settings(env, instance_path)
    app = Flask(__name__, instance_path=str(instance_path))
    app.config.update(
        SETTINGS=settings,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database_url),
        MAX_CONTENT_LENGTH=256 * 1024,
        JSON_SORT_KEYS=False,
    )
    register_logging(app, settings)
    register_extensions(app, settings)
    register_routes(app, settings)
    register_security(app, settings)
    register_cli(app)
    _announce_generated(settings, instance_path)
    return app


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        from utils.sqlite_locks import busy_timeout

        # Greenthreads share pooled connections, so sqlite3's same-thread check would
        # misfire. The busy timeout is a few milliseconds under eventlet/gevent, whose
        # hub sqlite3's C wait would block; writes wait for a lock in
        # utils/sqlite_locks.py instead, cooperatively.
        return {"connect_args": {"check_same_thread": False, "timeout": busy_timeout()}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20, "pool_timeout": 10}


def register_logging(app: Flask, settings: Settings) -> None:
    from utils.logs import configure_logging

    app.extensions["notifier.redactor"] = configure_logging(
        settings.log_level, settings.secrets_to_redact()
    )


def register_extensions(app: Flask, settings: Settings) -> None:
    # Handlers must be declared before the first init_app: Flask-SocketIO keeps
    # handlers declared before it for every server it builds, but binds later ones
    # to the current server only, which a second app (every test) would lack.
    import routes.events  # noqa: F401
    from utils.admission import Admission
    from utils.delivery import ReplayGuard, make_manager
    from utils.limits import client_ip
    from utils.logs import socketio_loggers
    from utils.middleware import NoWebSocketCompression
    from utils.origins import OriginPolicy
    from utils.patches import (
        bound_websocket_messages,
        guard_socketio_server,
        patch_eventlet_websocket,
    )
    from utils.realtime import Realtime
    from utils.sessions import ExpirySweeper, SocketRegistry
    from utils.token import EXTENSION_KEY, TokenService

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    _sqlite_pragmas(app, settings)
    app.extensions[EXTENSION_KEY] = TokenService(settings)

    guard = ReplayGuard()
    sio_logger, eio_logger = socketio_loggers(settings.socketio_logger)
    policy = OriginPolicy(settings.frontend_urls)
    app.extensions["notifier.origins"] = policy
    socketio.init_app(
        app,
        async_mode=settings.async_mode,
        cors_allowed_origins=policy,
        cors_credentials=True,
        transports=list(settings.transports),
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_http_buffer_size=settings.max_http_buffer_size,
        client_manager=make_manager(guard, settings.redis_url, "notifications", sio_logger),
        logger=sio_logger,
        engineio_logger=eio_logger,
        cookie=None,
        http_compression=True,
        always_connect=False,
    )
    admission = Admission(settings.connect_timeout, settings.max_pending_sessions_per_ip)
    app.extensions[Admission.KEY] = admission
    address_of = partial(client_ip, trusted=settings.trusted_proxies,
                         hops=settings.trusted_proxy_hops)
    guard_socketio_server(socketio.server, admission, address_of)
    bound_websocket_messages(socketio.server.eio)
    if settings.async_mode == "eventlet":
        patch_eventlet_websocket()
    registry = SocketRegistry()

    def end_expired(sid: str) -> None:
        socketio.emit("token_expired", {"code": "token_expired"}, to=sid)
        socketio.server.disconnect(sid, namespace="/")

    sweeper = ExpirySweeper(registry, settings.token_sweep_interval, end_expired,
                            socketio.start_background_task, socketio.sleep)
    app.extensions[Realtime.KEY] = Realtime(registry, guard, sweeper)
    if settings.redis_url:
        from utils.queue import redis_probe

        app.extensions["notifier.queue_probe"] = redis_probe(settings.redis_url)
    # Outermost, so Engine.IO never sees the extension offer.
    app.wsgi_app = NoWebSocketCompression(app.wsgi_app)


def _sqlite_pragmas(app: Flask, settings: Settings) -> None:
    if not settings.database_url.startswith("sqlite"):
        return
    from sqlalchemy import event

    with app.app_context():
        @event.listens_for(db.engine, "connect")
        def _pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()


def register_routes(app: Flask, settings: Settings) -> None:
    from routes import api, debug, health
    from routes.metrics import bp as metrics_bp
    from utils.errors import register_error_handlers
    from utils.origins import register_cors

    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(debug.bp)
    register_error_handlers(app)
    register_cors(app, app.extensions["notifier.origins"])


def register_security(app: Flask, settings: Settings) -> None:
    from utils.security import register_security as _register  # limits, headers

    _register(app, settings)


def register_cli(app: Flask) -> None:
    from utils.cli import register_commands

    register_commands(app)


def _announce_generated(settings: Settings, instance_path: Path) -> None:
    if not settings.generated:
        return
    # Printed once, when generated; later starts read them from instance/.
    print(f"Generated development secrets in {instance_path}/:", file=sys.stderr)
    if "NOTIFY_API_KEY" in settings.generated:
        print(f"  NOTIFY_API_KEY={settings.notify_api_key}", file=sys.stderr)
    if "JWT_SECRET_KEY" in settings.generated:
        print("  JWT_SECRET_KEY (kept in instance/jwt_secret_key.txt); mint a token with:"
              " flask --app app create-token USER_ID", file=sys.stderr)


def _load() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        # One clear line, then exit 4: gunicorn's "App failed to load" status, which
        # makes the master halt instead of respawning workers forever.
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(4) from None


app = _load()

if __name__ == "__main__":
    settings = app.config["SETTINGS"]
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()  # the same migrations `flask --app app db upgrade` applies
    started = time.strftime("%H:%M:%S")
    print(f"[{started}] serving on http://0.0.0.0:{settings.port} "
          f"({settings.async_mode}, {settings.app_env})", file=sys.stderr, flush=True)
    socketio.run(app, host="0.0.0.0", port=settings.port, log_output=False)
