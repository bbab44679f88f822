"""The extension objects, created unbound and bound to the app in ``create_app``."""

import os

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from utils.patches.python_socketio import SOCKETIO_OPTIONAL, without_modules

# Without REDIS_URL nothing imports redis (see utils/patches/python_socketio.py); with it set,
# python-socketio imports it as usual.
with without_modules(SOCKETIO_OPTIONAL, active=not os.environ.get("REDIS_URL", "").strip()):
    from flask_socketio import SocketIO

socketio = SocketIO()
db = SQLAlchemy()
migrate = Migrate()
