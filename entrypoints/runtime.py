"""What a server process installs once it has loaded the app and starts serving.

The same for every server the app runs under: gunicorn's eventlet and gevent workers
(gunicorn.conf.py's ``post_worker_init`` passes the worker) and ``python app.py``
(entrypoints/devserver.py). ``create_app`` itself routes Engine.IO's pings through one
task (utils/realtime/pinger.py) wherever the app runs, the test client included.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from utils.ops import gc_pauses, gc_tuning
from utils.realtime.drain import drain_on_sigterm
from utils.services import services

log = logging.getLogger(__name__)

EVENTLET_NOTICE = ("eventlet is deprecated and gunicorn 26 removes its worker; "
                   "ASYNC_MODE=gevent with --worker-class gevent is the maintained path")


PUSH_OFF_NOTICE = ("Web Push is off: set VAPID_PRIVATE_KEY and VAPID_SUBJECT to turn it on "
                   "(`flask --app app vapid-keys` prints a key); the push routes answer 404 "
                   "push_disabled")


def start_serving(app: Flask, worker: Any = None) -> None:
    """GC settings for many sockets, GC pause recording when asked for, the push
    dispatcher's task, presence's heartbeat task (with Redis), and with a gunicorn
    ``worker`` the drain that ends its transports on SIGTERM."""
    settings = services(app).settings
    gc_tuning.tune_after_start(settings.gc_tuning)
    gc_pauses.install(settings.gc_pause_log)
    services(app).dispatcher.ensure_started()  # delivery checks and pushes
    services(app).presence.ensure_started()  # with REDIS_URL: this node's heartbeats
    if services(app).outbox is not None:
        services(app).outbox.ensure_started()  # OUTBOX_ENABLED: docs/OUTBOX.md
    if worker is not None:
        drain_on_sigterm(worker, services(app).drain)
    if settings.async_mode == "eventlet":
        log.warning(EVENTLET_NOTICE)
    _say_if_not_migrated(app)
    if settings.is_production and not settings.push_enabled:
        log.warning(PUSH_OFF_NOTICE)
    if settings.metrics_closed:
        # ("bearer" followed by a word would be redacted from the line as a credential.)
        log.warning("/metrics is closed (403): set METRICS_TOKEN and send it in the "
                    "Authorization header to scrape it, or METRICS_PUBLIC=1 to open it")


def _say_if_not_migrated(app: Flask) -> None:
    """One line at start when the database's schema is behind the code's migrations
    (requests would fail with database_not_migrated until it is upgraded)."""
    from utils.db.schema import schema_state
    from utils.extensions import db

    try:
        with app.app_context(), db.engine.connect() as conn:
            state = schema_state(conn)
    except Exception as exc:  # unreachable now: /readyz and each request say so
        log.warning("could not read the database's schema revision: %s", type(exc).__name__)
        return
    if state.behind:
        log.error(state.describe())
