"""Limits: HTTP rate limits, Socket.IO connection caps and a token
bucket per socket. Every figure comes from configuration (see utils/config/settings.py)."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from flask import Flask, g, request
from flask_socketio import ConnectionRefusedError
from limits import parse as parse_limit
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from utils.auth.credentials import bearer, same_secret
from utils.config.settings import Settings
from utils.edge.addresses import client_ip
from utils.errors import ValidationError, error_response
from utils.extensions import socketio
from utils.patches.limits import expire_memory_limits_inline
from utils.patches.python_socketio import close_connection
from utils.services import services

log = logging.getLogger(__name__)

# The producer's routes: a bulk request counts once, like one POST.
PRODUCER_ENDPOINTS = ("api.create_notifications", "api.create_notifications_bulk")
# Probes and scrapes must never be throttled into looking like an outage.
EXEMPT_BLUEPRINTS = ("health", "metrics")
# Every limit, HTTP and socket, counts in a sliding window of two fixed-window
# counters (limits' SlidingWindowCounterRateLimiter): constant memory and time per
# key, in memory and in Redis. The moving window it replaced kept a timestamp per hit
# and inserted each at the front of a list, O(n) per check (issue 13).


class RateLimited(ValidationError):
    """A socket event refused by the per-socket token bucket: on_error_default turns
    it into an error ack like any bad input, and the socket stays up."""

    def __init__(self) -> None:
        super().__init__("too many events; slow down", code="rate_limited")


# ---------------------------------------------------------------- client address

# ---------------------------------------------------------------- HTTP limits

def _settings() -> Settings:
    return services().settings


def _offered_key() -> str:
    return bearer(request.headers.get("Authorization")) or ""


def _is_producer() -> bool:
    """A request carrying the real API key is limited per key, not per address: a
    producer service often sends everything from one address."""
    return same_secret(_offered_key(), _settings().notify_api_key)


def api_key_bucket(key: str) -> str:
    """A producer's bucket: a digest of its key, never the key itself (the bucket name
    is stored in Redis and may be logged)."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]


class HttpLimits:
    """The HTTP rate limits, checked before each request with the ``limits`` library.

    - A request that carries the valid API key is the producer's: on the producer
      routes it counts against ``RATE_LIMIT_API_KEY`` for that key; elsewhere it is
      not limited.
    - Any other request counts against ``RATE_LIMIT_HTTP`` for its client address,
      one budget across every route.
    - Health, readiness, metrics, static files and unknown paths are never limited.

    Every limited response carries X-RateLimit-Limit, -Remaining, -Reset (Unix time)
    and -Retry-After (seconds until the window resets); a refusal is 429
    ``rate_limited`` with Retry-After. When the shared storage (Redis) fails, counts
    go to this process's memory until it answers again, rechecked every
    ``RECHECK_SECONDS``, and one warning says so: an outage never fails a request.

    This replaced Flask-Limiter, which spent 16% of a producer request's CPU choosing
    which of its limits applied (docs/BENCHMARKS.md, issue 13)."""

    RECHECK_SECONDS = 5.0

    def __init__(self, settings: Settings) -> None:
        self.per_address = parse_limit(settings.rate_limit_http) if settings.rate_limit_http \
            else None
        self.per_key = parse_limit(settings.rate_limit_api_key) if settings.rate_limit_api_key \
            else None
        self._producer_bucket = api_key_bucket(settings.notify_api_key or "")
        self._trusted = settings.trusted_proxies, settings.trusted_proxy_hops
        self._shared = SlidingWindowCounterRateLimiter(
            storage_from_string(settings.rate_limit_storage_url))
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared_down_until = 0.0

    def limit_for(self) -> tuple[Any, tuple[str, ...]] | None:
        """The limit this request counts against and its key, or None."""
        endpoint = request.endpoint
        if not endpoint or request.blueprint in EXEMPT_BLUEPRINTS or \
                endpoint.rpartition(".")[2] == "static":
            return None
        if _is_producer():
            if endpoint in PRODUCER_ENDPOINTS and self.per_key is not None:
                return self.per_key, ("notif-producer", self._producer_bucket)
            return None
        if self.per_address is None:
            return None
        return self.per_address, ("notif-http", client_ip(request.environ, *self._trusted))

    def before_request(self) -> Any:
        chosen = self.limit_for()
        if chosen is None:
            return None
        item, key = chosen
        allowed, stats = self._count(item, key)
        g.rate_limit = item, stats
        if allowed:
            return None
        wait = min(math.ceil(stats.reset_time - time.time()), item.get_expiry())
        return error_response(429, "rate_limited", f"rate limit exceeded ({item})",
                              {"Retry-After": str(max(wait, 1))})

    def after_request(self, response: Any) -> Any:
        counted = g.pop("rate_limit", None)
        if counted is not None:
            item, stats = counted
            headers = response.headers
            headers["X-RateLimit-Limit"] = str(item.amount)
            headers["X-RateLimit-Remaining"] = str(stats.remaining)
            headers["X-RateLimit-Reset"] = str(int(stats.reset_time))
            headers["X-RateLimit-Retry-After"] = str(max(0, math.ceil(stats.reset_time
                                                                      - time.time())))
        return response

    def _count(self, item: Any, key: tuple[str, ...]) -> tuple[bool, Any]:
        if time.monotonic() >= self._shared_down_until:
            try:
                return self._shared.hit(item, *key), self._shared.get_window_stats(item, *key)
            except Exception:
                if not self._shared_down_until:
                    log.warning("rate-limit storage unreachable; counting in this process's "
                                "memory until it answers")
                self._shared_down_until = time.monotonic() + self.RECHECK_SECONDS
        return self._local.hit(item, *key), self._local.get_window_stats(item, *key)


def register_limits(app: Flask, settings: Settings) -> HttpLimits:
    """The HTTP rate limits, before every request."""
    expire_memory_limits_inline()
    limits = HttpLimits(settings)
    if limits.per_address is not None or limits.per_key is not None:
        app.before_request(limits.before_request)
        app.after_request(limits.after_request)
    return limits


# ---------------------------------------------------------------- socket limits

class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``strikes`` counts refusals in a row."""

    __slots__ = ("tokens", "stamp", "strikes")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.stamp = now
        self.strikes = 0

    def take(self, rate: float, burst: int, now: float) -> bool:
        self.tokens = min(float(burst), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.strikes = 0
            return True
        self.strikes += 1
        return False


class SocketLimits:
    """Per-IP connection attempts (shared storage), sockets per user and event buckets
    (this process)."""


    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._connect_limit = (parse_limit(f"{settings.connect_rate_per_ip}/minute")
                               if settings.connect_rate_per_ip else None)
        self._handshake_limit = (parse_limit(f"{2 * settings.connect_rate_per_ip}/minute")
                                 if settings.connect_rate_per_ip else None)
        self._window = None
        if self._connect_limit is not None:
            storage = storage_from_string(settings.rate_limit_storage_url)
            self._window = SlidingWindowCounterRateLimiter(storage)

    def check_connect(self, environ: Mapping[str, Any]) -> None:
        """Refuses an address that opened too many sockets in the last minute."""
        if not self._hit(self._connect_limit, "notif-connect", environ):
            raise ConnectionRefusedError("rate_limited", {"code": "too_many_attempts"})

    def allow_handshake(self, environ: Mapping[str, Any]) -> bool:
        """Engine.IO handshakes (a session without a Socket.IO connect yet) per client
        address per minute: twice the connect budget, so only abuse reaches it."""
        return self._hit(self._handshake_limit, "notif-handshake", environ)

    def _hit(self, limit: Any, namespace: str, environ: Mapping[str, Any]) -> bool:
        """Counts one attempt from the request's address; False once over ``limit``."""
        if self._window is None:
            return True
        ip = client_ip(environ, self.settings.trusted_proxies,
                       self.settings.trusted_proxy_hops)
        try:
            return self._window.hit(limit, namespace, ip)
        except Exception:  # the storage (Redis) is down: fail open, but say so
            log.warning("connection-rate storage unavailable; not limiting")
            return True

    def check_user_cap(self, current: int) -> None:
        """Refuses a user's socket beyond MAX_SOCKETS_PER_USER (``current`` open)."""
        cap = self.settings.max_sockets_per_user
        if cap and current >= cap:
            raise ConnectionRefusedError("rate_limited", {"code": "too_many_connections"})

    def allow_event(self, sid: str) -> bool | None:
        """True to handle, False to refuse with an ack, None to disconnect (a flood)."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(sid)
            if bucket is None:
                bucket = self._buckets[sid] = TokenBucket(self.settings.socket_event_burst, now)
            if bucket.take(self.settings.socket_event_rate, self.settings.socket_event_burst,
                           now):
                return True
            return None if bucket.strikes >= self.settings.socket_flood_limit else False

    def forget(self, sid: str) -> None:
        with self._lock:
            self._buckets.pop(sid, None)


def socket_limits() -> SocketLimits:
    return services().socket_limits


def throttled(handler: Callable) -> Callable:
    """Socket event handlers: a token bucket per socket. Over the rate, the event is
    refused with an error ack; a flood that keeps going ends the connection."""

    @wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Flask-SocketIO runs each event in a request context for the Socket.IO URL,
        # which matches no route: Flask keeps the NotFound on routing_exception, and its
        # traceback holds the event's frames and payload in a reference cycle. An event
        # that waits (a receipt's linger and write) carries the cycle into the GC
        # generation the worker scans rarely: twenty users' receipt floods kept ~40 KB
        # a receipt (95 to 130 MB in 40 s). Nothing reads it in a socket event.
        request.routing_exception = None
        if not admit_event(socket_limits(), socketio.server, request.sid):
            return None
        return handler(*args, **kwargs)

    return wrapper


def admit_event(limits: SocketLimits, server: Any, sid: str) -> bool:
    """The socket's token bucket, for one event: True to handle it; raises RateLimited
    (an error ack) over the rate; False when a flood ended the connection (no ack).
    ``throttled`` uses it, and so does a handler without Flask's context."""
    verdict = limits.allow_event(sid)
    if verdict is None:
        # The whole Engine.IO session goes, not only the namespace: a new CONNECT
        # on the same session would start with a fresh bucket.
        log.warning("socket flood: closing %s", sid)
        close_connection(server, sid)
        return False
    if verdict is False:
        raise RateLimited()
    return True
