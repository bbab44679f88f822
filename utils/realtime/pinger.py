"""One background task sends every socket's Engine.IO pings.

python-engineio starts a greenthread per socket for each ping: it sleeps
``ping_interval`` and sends one PING. With 10k sockets that is 10k sleeping
greenthreads, each with its own stack and hub timer. Here a single task sends
every ping. Sockets wait in slots of one tick each, so a tick looks only at the
sockets due in it, never at all of them.

A tick is a fortieth of the ping interval, and at most half a second. The pings due
in a tick are spread over most of it, in small chunks: sockets that connected
together come due together (10k sockets connected in 12 s give 800 pings a second for
12 s of every 25), and sending them in one go held the hub for 60 to 280 ms, which
every notification in flight waited out (issue 13). A ping goes out at most two
ticks late: within 5% of its interval at any interval (with ``PING_INTERVAL=1`` the
task wakes every 25 ms; at the default 25 s, twice a second).

Only the sending moves. Engine.IO still detects a dead peer the way it always does
(the writer's ``ping_interval + ping_timeout`` read timeout), and a socket that
closes is dropped when its ping falls due.

Installed by ``create_app`` for every server the app runs under: gunicorn's
eventlet and gevent workers, and ``python app.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from engineio import packet

from utils.patches.python_engineio import route_pings

log = logging.getLogger(__name__)

MAX_TICK_SECONDS = 0.5
TICKS_PER_INTERVAL = 40
# A tick's pings go out PACE_CHUNK at a time, spread over PACE_SHARE of the tick.
# A ping and its PONG cost about 140 µs of the worker on eventlet, so a chunk holds
# the hub about 3.5 ms.
PACE_CHUNK = 25
PACE_SHARE = 0.8


class Pinger:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 pause: Callable[[float], None] | None = None) -> None:
        self._due: dict[Any, float] = {}
        self._slots: dict[int, list[Any]] = {}
        self._next_slot: int | None = None
        self._clock = clock
        self._pause = pause
        self.tick = MAX_TICK_SECONDS

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, sock: Any) -> None:
        """Engine.IO's ``Socket.schedule_ping``: only after the last ping's PONG."""
        if sock.last_ping:
            sock.last_ping = None
            interval = sock.server.ping_interval
            self.tick = min(MAX_TICK_SECONDS, interval / TICKS_PER_INTERVAL)
            due = self._clock() + interval
            self._due[sock] = due
            self._slots.setdefault(math.ceil(due / self.tick), []).append(sock)

    def send_due(self) -> int:
        """Send the pings of every slot that has come due; returns how many were due."""
        now = self._clock()
        last = math.floor(now / self.tick)
        first = self._next_slot if self._next_slot is not None else min(self._slots,
                                                                        default=last)
        self._next_slot = last + 1
        due = []
        for slot in range(first, last + 1):
            due.extend(self._slots.pop(slot, ()))
        ready = []
        for sock in due:
            at = self._due.get(sock)
            if at is None:
                continue  # pinged already
            if at > now:  # slotted under a shorter tick: wait in its own slot
                self._slots.setdefault(math.ceil(at / self.tick), []).append(sock)
                continue
            del self._due[sock]
            ready.append(sock)
        spacing = PACE_SHARE * self.tick * PACE_CHUNK / len(ready) \
            if len(ready) > PACE_CHUNK else 0.0
        for n, sock in enumerate(ready):
            if n and n % PACE_CHUNK == 0 and self._pause is not None:
                self._pause(spacing)
            if sock.closing or sock.closed:
                continue
            sock.last_ping = time.time()
            try:
                sock.send(packet.Packet(packet.PING))
            except Exception:
                log.exception("could not send a ping")
        return len(ready)

    def run(self, sleep: Callable[[float], None]) -> None:
        busy = 0.0
        while True:
            sleep(max(self.tick - busy, 0.0))  # a spread-out tick counts toward the next
            started = self._clock()
            self.send_due()
            busy = self._clock() - started


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
