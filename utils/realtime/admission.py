"""What an Engine.IO session may send, before and after it signs in.

A new Engine.IO session costs the worker a socket object, a queue and a ping task
before anyone knows who it is. Until the session's Socket.IO CONNECT succeeds, the
only thing it may send is that CONNECT, within CONNECT_TIMEOUT; anything else, or
silence past the deadline, closes it. One client address may hold at most
MAX_PENDING_SESSIONS_PER_IP such sessions at a time.

After sign-in, a packet this API never uses also ends the session: binary packets
(there are no binary payloads here), a second CONNECT, and events named like the
server's own lifecycle events, which would otherwise run its connect and disconnect
handlers (python-socketio keeps reserved names only from the catch-all handler).

``Admission`` is the pure bookkeeping; utils/patches/python_socketio.py hooks it into
python-socketio's Engine.IO handlers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from utils.tasks import Sweep

log = logging.getLogger(__name__)

# Socket.IO v5 packet types, the first character of an Engine.IO message.
CONNECT, DISCONNECT, EVENT, BINARY_EVENT, BINARY_ACK = "0", "1", "2", "5", "6"
# Names a client may never send as an event: Socket.IO's lifecycle events, on the
# server and in the JavaScript client.
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener", "__disconnect_final"})


def message_problem(data: object, signed_in: bool) -> str | None:
    """Why a session must be closed for this Engine.IO message, or None."""
    if not isinstance(data, str):
        return "a binary message"
    kind = data[:1]
    if kind in (BINARY_EVENT, BINARY_ACK):
        return "a binary packet"
    if not signed_in:
        return None if kind == CONNECT else "a packet before CONNECT"
    if kind == CONNECT:
        return "a second CONNECT"
    return None


def event_problem(data: object) -> str | None:
    """Why a decoded event (``[name, *args]``) must end the session, or None."""
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        return "an event without a name"
    if data[0] in RESERVED_EVENTS:
        return "a reserved event name"
    return None


class Admission:
    """Engine.IO sessions that have not signed in yet: their deadlines and addresses."""


    def __init__(self, timeout: float, per_address: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.per_address = per_address
        self.clock = clock
        # Insertion order is deadline order: every deadline is now + the same timeout.
        self._pending: dict[str, tuple[float, str]] = {}
        self._per_address: Counter[str] = Counter()
        self._lock = threading.Lock()

    def has_room(self, address: str) -> bool:
        """False when ``address`` already holds its share of unsigned sessions."""
        return not self.per_address or self._per_address[address] < self.per_address

    def opened(self, eio_sid: str, address: str) -> None:
        """A session started, or signed out and must sign in again."""
        with self._lock:
            self._drop(eio_sid)
            self._pending[eio_sid] = (self.clock() + self.timeout, address)
            self._per_address[address] += 1

    def settled(self, eio_sid: str) -> None:
        """The session signed in, or is gone."""
        with self._lock:
            self._drop(eio_sid)

    def overdue(self) -> list[str]:
        """Sessions past their deadline, taken off the books."""
        now, due = self.clock(), []
        with self._lock:
            for eio_sid, (deadline, _address) in self._pending.items():
                if deadline > now:
                    break
                due.append(eio_sid)
            for eio_sid in due:
                self._drop(eio_sid)
        return due

    def __len__(self) -> int:
        return len(self._pending)

    def _drop(self, eio_sid: str) -> None:
        entry = self._pending.pop(eio_sid, None)
        if entry is not None:
            address = entry[1]
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]


class AdmissionSweeper(Sweep):
    """Closes the sessions whose CONNECT never came."""

    def __init__(self, admission: Admission, close: Callable[[str], None],
                 is_signed_in: Callable[[str], bool],
                 start_task: Callable[..., object], sleep: Callable[[float], None]) -> None:
        super().__init__(start_task, sleep)
        self.admission = admission
        self.close = close
        self.is_signed_in = is_signed_in
        self.interval = min(1.0, admission.timeout / 4)

    def sweep_once(self) -> int:
        closed = 0
        for eio_sid in self.admission.overdue():
            if self.is_signed_in(eio_sid):
                continue
            try:
                self.close(eio_sid)
                closed += 1
            except Exception:
                log.exception("could not close a session that never signed in")
        return closed


class Rules:
    """Admission's rules in the shape utils/patches' ``guard_socketio_server`` takes
    them: the patch applies them, and imports nothing of the app."""

    def __init__(self, admission: Admission, address_of: Callable[[dict], str]) -> None:
        self.admission, self.address_of = admission, address_of
        self.sweeper: AdmissionSweeper | None = None  # set once the guard is installed

    message_problem = staticmethod(message_problem)
    event_problem = staticmethod(event_problem)

    def opened(self, eio_sid: str, environ: dict) -> None:
        self.admission.opened(eio_sid, self.address_of(environ))

    def connected(self, eio_sid: str, environ: dict) -> None:
        """A new Engine.IO session: opened, and the sweeper that closes it in time runs."""
        self.opened(eio_sid, environ)
        if self.sweeper is not None:
            self.sweeper.ensure_started()

    def settled(self, eio_sid: str) -> None:
        self.admission.settled(eio_sid)
