"""Close this process's Engine.IO transports so their clients reconnect elsewhere.

Closing the Socket.IO session (a DISCONNECT packet) would tell socket.io-client the
server meant it ("io server disconnect"), and the client would not reconnect by
itself. Ending the transport instead looks like a dropped connection: every
socket.io-client, and python-socketio's client, reconnects on its own, with its
``last_id``, through the proxy to whichever node answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def close_transports(
    eio_server: Any, sleep: Callable[[float], None], batch: int = 200, pause: float = 0.02
) -> int:
    """Abort every Engine.IO session of this process, ``batch`` at a time so the
    reconnect wave reaches the other nodes spread out; returns how many."""
    sessions = list(eio_server.sockets.items())
    for done, (sid, session) in enumerate(sessions, 1):
        try:
            # abort=True: no CLOSE packet, so clients treat it as a lost connection.
            session.close(wait=False, abort=True)
        except Exception:
            log.debug("closing session %s failed", sid, exc_info=True)
        eio_server.sockets.pop(sid, None)
        if done % batch == 0:
            sleep(pause)
    return len(sessions)


# gunicorn's eventlet worker notices SIGTERM within a second and then closes its
# listening socket; draining after that sends reconnects to the other nodes.
DRAIN_DELAY = 1.5
WATCH_INTERVAL = 0.2


def drain_on_sigterm(worker: Any) -> None:
    """When a gunicorn worker begins its graceful shutdown (SIGTERM clears
    ``worker.alive``), close its Socket.IO transports after it stops accepting, so
    clients reconnect elsewhere at once instead of being cut off when the graceful
    timeout runs out. A watcher greenthread, not a signal handler: eventlet does
    not promptly run greenthreads spawned from inside a signal handler."""
    from utils.extensions import socketio

    def watch() -> None:
        while worker.alive:
            socketio.sleep(WATCH_INTERVAL)
        socketio.sleep(DRAIN_DELAY)
        count = close_transports(socketio.server.eio, socketio.sleep)
        log.warning(
            "shutting down: closed %d transport(s); their clients reconnect elsewhere", count
        )

    socketio.start_background_task(watch)
