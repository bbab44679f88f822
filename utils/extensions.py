"""The extension objects, created unbound and bound to the app in ``create_app``."""

from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy

socketio = SocketIO()
db = SQLAlchemy()
migrate = Migrate()
