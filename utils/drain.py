"""Close this process's Engine.IO transports so their clients reconnect elsewhere.

Closing the Socket.IO session (a DISCONNECT packet) would tell socket.io-client the
server meant it ("io server disconnect"), and the client would not reconnect by
itself. Ending the transport instead looks like a dropped connection: every
socket.io-client, and python-socketio's client, reconnects on its own, with its
``last_id``, through the proxy to whichever node answers.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


def close_transports(eio_server: Any, sleep: Callable[[float], None],
                     batch: int = 200, pause: float = 0.02) -> int:
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
