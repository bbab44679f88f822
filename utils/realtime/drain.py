"""End this process's Engine.IO transports so their clients reconnect elsewhere.

Used on SIGTERM (``drain_on_sigterm``, installed by entrypoints/runtime.py in each
gunicorn worker), and when the Redis queue comes back after an outage that stored
more than the catch-up re-sends (utils/realtime/queue.py): there the transports end
so their clients replay, and new sessions are still welcome. Closing
the Socket.IO session (a DISCONNECT packet) would tell socket.io-client the server
meant it ("io server disconnect"), and the client would not reconnect by itself.
Ending the transport instead looks like a dropped connection: every
socket.io-client, and python-socketio's client, reconnects on its own, with its
``last_id``, through the proxy to whichever node answers.

WebSockets are ended by shutting their TCP connection down first. Letting
python-engineio close them instead sends a close frame and closes the descriptor
while eventlet still has the session's reader waiting on it; eventlet never wakes
that reader, so the request never finishes and gunicorn waits out its whole
graceful timeout.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from utils.errors import refusal
from utils.patches.python_engineio import abort_sessions

log = logging.getLogger(__name__)

# gunicorn's eventlet worker notices SIGTERM within a second and then closes its
# listening socket; the drain waits for that (at most this long), so reconnects
# go to the other nodes.
DRAIN_DELAY = 1.5
WATCH_INTERVAL = 0.1
# Time for shut-down WebSocket handlers to notice and end their sessions.
SETTLE = 0.2


class DrainLayer:
    """WSGI middleware for the drain: the raw connections of the WebSocket requests in
    progress (gunicorn puts each request's socket in ``environ["gunicorn.socket"]``),
    and, once draining, a 503 for every new Engine.IO session. A proxy may still send
    requests over connections it keeps open to this node after it stopped accepting;
    without the 503 a reconnecting client could open a new session here, and its
    long-poll would hold the worker until the graceful timeout kills it."""

    def __init__(self, app: Callable, path: str = "/socket.io") -> None:
        self.app = app
        self.path = path
        self.open: set[Any] = set()
        self.draining = False

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        if self.draining and self._new_session(environ):
            return _refuse_draining(start_response)
        sock = environ.get("gunicorn.socket")
        if sock is None or environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return self.app(environ, start_response)
        self.open.add(sock)
        try:
            return self.app(environ, start_response)
        finally:
            self.open.discard(sock)

    def _new_session(self, environ: dict) -> bool:
        return (str(environ.get("PATH_INFO", "")).startswith(self.path)
                and "sid=" not in str(environ.get("QUERY_STRING", "")))

    def shutdown_all(self, sleep: Callable[[float], None], batch: int = 200) -> int:
        """Shut every tracked connection down (FIN both ways); returns how many."""
        connections = list(self.open)
        for done, sock in enumerate(connections, 1):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if done % batch == 0:
                sleep(0.02)  # spread the reconnect wave
        return len(connections)


def _refuse_draining(start_response: Callable) -> list[bytes]:
    return refusal(start_response, "503 Service Unavailable", "draining",
                   "this node is shutting down; reconnect",
                   [("Retry-After", "1"), ("Connection", "close")])


def close_transports(eio_server: Any, tracker: DrainLayer | None,
                     sleep: Callable[[float], None], refuse_new: bool = True) -> int:
    """End every Engine.IO session of this process, so clients reconnect (elsewhere,
    when ``refuse_new``: new sessions are refused from now on); returns how many.
    WebSockets are shut down first (see the module docstring)."""
    if tracker is not None and refuse_new:
        tracker.draining = True
    if tracker is not None and tracker.shutdown_all(sleep):
        sleep(SETTLE)
    return abort_sessions(eio_server, sleep)


def drain_on_sigterm(worker: Any, tracker: DrainLayer) -> None:
    """When a gunicorn worker begins its graceful shutdown (SIGTERM clears
    ``worker.alive``), end its Socket.IO transports as soon as it stops accepting,
    so clients reconnect elsewhere at once instead of being cut off when the
    graceful timeout runs out. A watcher greenthread, not a signal handler: eventlet
    does not promptly run greenthreads spawned from inside a signal handler."""
    from utils.extensions import socketio

    def listening() -> bool:
        # gunicorn's listener wrapper drops its socket once the acceptor closed it.
        return any(getattr(s, "sock", None) is not None for s in worker.sockets)

    def watch() -> None:
        while worker.alive:
            socketio.sleep(WATCH_INTERVAL)
        waited = 0.0
        while listening() and waited < DRAIN_DELAY:
            socketio.sleep(WATCH_INTERVAL)
            waited += WATCH_INTERVAL
        count = close_transports(socketio.server.eio, tracker, socketio.sleep)
        log.warning(
            "shutting down: closed %d transport(s); their clients reconnect elsewhere", count
        )

    socketio.start_background_task(watch)
