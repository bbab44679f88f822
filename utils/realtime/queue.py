"""The Redis message queue, imported only when REDIS_URL is set."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def redis_probe(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    """A readiness check that pings Redis with a bounded timeout."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def probe() -> bool:
        try:
            return bool(client.ping())
        except Exception as exc:
            log.warning("readiness: message queue error: %s", type(exc).__name__)
            return False

    return probe
