"""One background task sends every socket's Engine.IO pings.

python-engineio starts a greenthread per socket for each ping: it sleeps
``ping_interval`` and sends one PING. With 10k sockets that is 10k sleeping
greenthreads, each with its own stack and hub timer. Here the sockets due for a
ping wait in one dict and a single task sends the pings that are due, once a
second.

Only the sending moves. Engine.IO still detects a dead peer the way it always does
(the writer's ``ping_interval + ping_timeout`` read timeout), and a socket that
closes is dropped when its ping falls due. A ping goes out up to one tick late,
well inside the client's ``pingInterval + pingTimeout`` allowance.

Installed by ``create_app`` for every server the app runs under: gunicorn's
eventlet and gevent workers, and ``python app.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from engineio import packet

from utils.patches import route_pings

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
# Pings sent before the task yields: sockets that connected together come due
# together, and 1,000 pings in one go would stall every other greenthread ~40 ms.
YIELD_EVERY = 100


class Pinger:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 pause: Callable[[float], None] | None = None) -> None:
        self._due: dict[Any, float] = {}
        self._clock = clock
        self._pause = pause

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, sock: Any) -> None:
        """Engine.IO's ``Socket.schedule_ping``: only after the last ping's PONG."""
        if sock.last_ping:
            sock.last_ping = None
            self._due[sock] = self._clock() + sock.server.ping_interval

    def send_due(self) -> int:
        now = self._clock()
        due = [sock for sock, at in self._due.items() if at <= now]
        for count, sock in enumerate(due, 1):
            if self._pause is not None and count % YIELD_EVERY == 0:
                self._pause(0)
            if self._due.get(sock, now + 1) > now:
                continue  # rescheduled while this task yielded
            del self._due[sock]
            if sock.closing or sock.closed:
                continue
            sock.last_ping = time.time()
            try:
                sock.send(packet.Packet(packet.PING))
            except Exception:
                log.exception("could not send a ping")
        return len(due)

    def run(self, sleep: Callable[[float], None]) -> None:
        while True:
            sleep(TICK_SECONDS)
            self.send_due()


_installed: Pinger | None = None


def install(start_task: Callable[..., Any], sleep: Callable[[float], None]) -> Pinger:
    """Once per process: route every socket's ping through one ``Pinger``, whose task
    starts when the first socket asks for a ping."""
    global _installed
    if _installed is None:
        pinger = _installed = Pinger(pause=sleep)
        started = False

        def schedule(sock: Any) -> None:
            nonlocal started
            if not started:
                started = True
                start_task(pinger.run, sleep)
            pinger.schedule(sock)

        route_pings(schedule)
    return _installed
