"""limits 5.8.0: the in-memory storage drops expired counters inline, without a
timer thread."""

from __future__ import annotations

import time
from typing import Any

_limits_patched = False



# How often an in-memory rate-limit storage drops its expired counters.
MEMORY_LIMITS_EXPIRY_SECONDS = 5.0


def expire_memory_limits_inline() -> None:
    """Upstream ``limits.storage.MemoryStorage`` starts a ``threading.Timer`` (10 ms)
    on every hit when none is alive, and its run copies every key's state. Under
    eventlet that timer is a green thread, ``is_alive()`` is False until it first
    runs, so a burst of hits starts one each; and ``Thread.__init__`` calls
    ``current_thread()``, which registers the calling greenthread (a socket's, for
    a connect) as a thread with a link callback for as long as it lives. With the
    per-address connect limit on, sockets weighed 17 KB more (issue 13). Here no
    timer starts: expired counters are dropped inline, at most once every
    ``MEMORY_LIMITS_EXPIRY_SECONDS`` per storage. Reads never see an expired
    counter either way: ``get`` checks the expiry itself."""
    global _limits_patched
    if _limits_patched:
        return
    from limits.storage.memory import MemoryStorage

    expire = MemoryStorage._MemoryStorage__expire_events  # type: ignore[attr-defined]

    def expire_now_and_then(self: Any) -> None:
        now = time.monotonic()
        if now >= getattr(self, "_next_inline_expiry", 0.0):
            self._next_inline_expiry = now + MEMORY_LIMITS_EXPIRY_SECONDS
            expire(self)

    MemoryStorage._MemoryStorage__schedule_expiry = expire_now_and_then  # type: ignore[attr-defined]
    _limits_patched = True
