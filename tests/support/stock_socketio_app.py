"""A stock Flask-SocketIO app, set up the way tutorials set it up: every origin
allowed (``cors_allowed_origins="*"``, credentials on by default), any socket
accepted without a token, and eventlet's WebSocket left to negotiate
permessage-deflate. The doctor's tests run it under gunicorn as a misconfigured
server: ``gunicorn --worker-class eventlet -w 1 tests.support.stock_socketio_app:app``.
"""

from flask import Flask
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app, cors_allowed_origins="*", async_mode="eventlet")


@socketio.on("connect")
def on_connect(auth=None):
    """Anyone: accepted, with or without a token."""
