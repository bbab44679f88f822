"""Who each connected socket is, and the one sweeper that ends expired tokens.

Per-socket state is one small entry here rather than Flask-SocketIO's session dict,
and token expiry is one heap swept by a single background task, not a timer per
socket: both matter when one worker holds thousands of sockets.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from utils.tasks import Sweep

log = logging.getLogger(__name__)

# Stale expiry entries tolerated beyond twice the live sockets before a rebuild.
HEAP_SLACK = 64


@dataclass
class SocketEntry:
    user_id: str
    expires_at: float | None


class SocketRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, SocketEntry] = {}
        self._by_user: dict[str, set[str]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        # Called with the user after each add and remove (utils/realtime/presence.py).
        self.on_change: Callable[[str], None] | None = None

    def add(self, sid: str, user_id: str, expires_at: float | None) -> None:
        with self._lock:
            self._entries[sid] = SocketEntry(user_id, expires_at)
            self._by_user.setdefault(user_id, set()).add(sid)
            if expires_at is not None:
                heapq.heappush(self._expiry, (expires_at, sid))
        if self.on_change is not None:
            self.on_change(user_id)

    def remove(self, sid: str) -> SocketEntry | None:
        with self._lock:
            entry = self._entries.pop(sid, None)
            if entry is not None:
                sids = self._by_user.get(entry.user_id)
                if sids is not None:
                    sids.discard(sid)
                    if not sids:
                        del self._by_user[entry.user_id]
                if len(self._expiry) > 2 * len(self._entries) + HEAP_SLACK:
                    self._compact()
        if entry is not None and self.on_change is not None:
            self.on_change(entry.user_id)
        return entry

    def _compact(self) -> None:
        """Drop the heap entries of sockets that are gone. The heap skips them lazily
        when they come due, but a connect/disconnect loop would otherwise keep one per
        connect until its token's exp; rebuilding once the heap holds twice the live
        sockets keeps it within that, at O(1) amortised per removal."""
        self._expiry = [(entry.expires_at, sid) for sid, entry in self._entries.items()
                        if entry.expires_at is not None]
        heapq.heapify(self._expiry)

    def expiry_entries(self) -> int:
        return len(self._expiry)

    def user_of(self, sid: str) -> str | None:
        entry = self._entries.get(sid)
        return entry.user_id if entry else None

    def users(self) -> set[str]:
        """The users with a socket here now (a copy)."""
        with self._lock:
            return set(self._by_user)

    def counts(self) -> dict[str, int]:
        """Sockets here per user (a copy)."""
        with self._lock:
            return {user: len(sids) for user, sids in self._by_user.items()}

    def count_for(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def __len__(self) -> int:
        return len(self._entries)

    def pop_expired(self, now: float) -> list[str]:
        """Sids whose token expired by ``now``; stale heap entries are skipped."""
        expired = []
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                expires_at, sid = heapq.heappop(self._expiry)
                entry = self._entries.get(sid)
                if entry is not None and entry.expires_at == expires_at:
                    expired.append(sid)
        return expired


class ExpirySweeper(Sweep):
    """Runs ``on_expired(sid)`` for every socket whose token has passed ``exp``."""

    def __init__(self, registry: SocketRegistry, interval: float,
                 on_expired: Callable[[str], None],
                 start_task: Callable[..., object], sleep: Callable[[float], None],
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(start_task, sleep)
        self.registry = registry
        self.interval = interval
        self.on_expired = on_expired
        self._clock = clock

    def sweep_once(self) -> int:
        expired = self.registry.pop_expired(self._clock())
        for sid in expired:
            try:
                self.on_expired(sid)
            except Exception:
                log.exception("could not end an expired socket")
        return len(expired)
