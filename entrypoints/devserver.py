"""``python app.py``: the app on eventlet's or gevent's own server, for development.

The listening socket is this process's alone. eventlet's ``listen`` sets
SO_REUSEPORT by default, so a second ``python app.py`` used to bind the same port
and the kernel spread connections over both processes: sessions broke at random.
"""

from __future__ import annotations

import errno
import sys
import time

from flask import Flask
from flask_migrate import upgrade

from entrypoints.runtime import start_serving
from utils.services import services

HOST = "0.0.0.0"


def serve(app: Flask) -> None:
    settings = services(app).settings
    with app.app_context():
        upgrade()  # the same migrations `flask --app app db upgrade` applies
    try:
        server = _bind(app, settings.async_mode, settings.port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"port {settings.port} is already in use (another server?): stop it, "
              "or set PORT", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    start_serving(app)
    started = time.strftime("%H:%M:%S")
    print(f"[{started}] serving on http://{HOST}:{settings.port} "
          f"({settings.async_mode}, {settings.app_env})", file=sys.stderr, flush=True)
    server()


def _bind(app: Flask, async_mode: str, port: int):
    """Bind without SO_REUSEPORT; returns the function that serves forever."""
    if async_mode == "gevent":
        from gevent.pywsgi import WSGIServer

        gevent_server = WSGIServer((HOST, port), app, log=None)
        gevent_server.init_socket()  # binds now, so a taken port fails here
        return gevent_server.serve_forever
    import eventlet
    import eventlet.wsgi

    sock = eventlet.listen((HOST, port), reuse_port=False)
    return lambda: eventlet.wsgi.server(sock, app, log_output=False)
