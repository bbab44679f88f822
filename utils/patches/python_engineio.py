"""python-engineio 4.15.1: bounded WebSocket messages, every ping on one task, and
aborting sessions in batches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)



def bound_websocket_messages(eio: Any) -> None:
    """Cap the total size of a WebSocket message on every worker.

    Upstream, python-engineio's eventlet driver passes ``max_http_buffer_size`` to
    eventlet as a per-frame limit only, and its gevent and threading drivers build
    simple-websocket servers with no ``max_message_size`` at all: one 2 MB frame, or
    an endless fragmented message, is accepted. simple-websocket counts a message's
    fragments together, so passing the limit bounds both; eventlet is patched below."""
    from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI

    websocket_class = eio._async["websocket"]
    if not issubclass(websocket_class, SimpleWebSocketWSGI):
        return
    limit = int(eio.max_http_buffer_size)

    class BoundedWebSocket(websocket_class):
        def __init__(self, handler: Callable, server: Any) -> None:
            super().__init__(handler, server)
            self.server_args["max_message_size"] = limit

    eio._async = {**eio._async, "websocket": BoundedWebSocket}


def route_pings(schedule: Callable[[Any], None]) -> None:
    """Upstream ``engineio.socket.Socket.schedule_ping`` starts a greenthread per
    socket that sleeps ``ping_interval`` and sends one PING; with 10k sockets that is
    10k sleeping greenthreads. Here every socket's ping is handed to ``schedule``
    (utils/realtime/pinger.py), which keeps one task for all of them."""
    import engineio.socket

    engineio.socket.Socket.schedule_ping = lambda sock: schedule(sock)


def abort_sessions(eio: Any, sleep: Callable[[float], None], batch: int = 200,
                   pause: float = 0.02) -> int:
    """End every Engine.IO session of this process without a CLOSE packet, ``batch``
    at a time so the reconnect wave reaches other nodes spread out; returns how many.

    Upstream has no way to end sessions that clients read as a lost connection:
    ``Server.disconnect`` sends CLOSE (socket.io-client then does not reconnect) and
    waits for the queue. Here each session in the private ``eio.sockets`` dict is
    closed with ``abort=True, wait=False`` and taken out of it."""
    sessions = list(eio.sockets.items())
    for done, (sid, session) in enumerate(sessions, 1):
        try:
            session.close(wait=False, abort=True)
        except Exception:
            log.debug("closing session %s failed", sid, exc_info=True)
        eio.sockets.pop(sid, None)
        if done % batch == 0:
            sleep(pause)
    return len(sessions)
