"""Limits: HTTP rate limits (Flask-Limiter), Socket.IO connection caps and a token
bucket per socket. Every figure comes from configuration (see utils/config/settings.py)."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from flask import Flask, current_app, request
from flask_limiter import HeaderNames, Limiter, RateLimitExceeded
from flask_socketio import ConnectionRefusedError
from limits import parse as parse_limit
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from utils.auth.credentials import bearer, same_secret
from utils.config.settings import Settings
from utils.edge.errors import error_response
from utils.extensions import socketio
from utils.notifications.validation import ValidationError
from utils.patches import close_connection, expire_memory_limits_inline

log = logging.getLogger(__name__)

PRODUCER_ENDPOINT = "api.create_notifications"
# Probes and scrapes must never be throttled into looking like an outage.
EXEMPT_BLUEPRINTS = ("health", "metrics")
# Every limit, HTTP and socket, counts in a sliding window of two fixed-window
# counters (limits' "sliding-window-counter"): constant memory and time per key. The
# moving window it replaced stored an entry per hit and, in memory, copied each key's
# list every 10 ms: with CONNECT_RATE_PER_IP raised, 20 KB more per socket (issue 13).
WINDOW_STRATEGY = "sliding-window-counter"


class RateLimited(ValidationError):
    """A socket event refused by the per-socket token bucket: on_error_default turns
    it into an error ack like any bad input, and the socket stays up."""

    def __init__(self) -> None:
        super().__init__("too many events; slow down", code="rate_limited")


# ---------------------------------------------------------------- client address

def client_ip(environ: Mapping[str, Any], trusted: tuple[str, ...], hops: int = 0) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy, in which
    case X-Forwarded-For is walked from the right past every trusted hop. With
    ``hops`` the nearest that many proxies are trusted whatever their addresses: the
    client is the entry the outermost of them appended."""
    peer = str(environ.get("REMOTE_ADDR") or "unknown")
    if hops:
        forwarded = [h.strip() for h in str(environ.get("HTTP_X_FORWARDED_FOR") or "")
                     .split(",") if h.strip()]
        chain = [*forwarded, peer]
        return chain[-(hops + 1)] if len(chain) > hops else chain[0]
    if not trusted:
        return peer
    networks = [ipaddress.ip_network(n) for n in trusted]
    hops = [h.strip() for h in str(environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")]
    candidate = peer
    for hop in [peer, *reversed([h for h in hops if h])]:
        candidate = hop
        if not _within(hop, networks):
            return hop
    return candidate


def _within(address: str, networks: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # garbage in the header is the client's claim, not a proxy
    return any(ip in net for net in networks)


# ---------------------------------------------------------------- HTTP limits

def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _request_ip() -> str:
    settings = _settings()
    return client_ip(request.environ, settings.trusted_proxies, settings.trusted_proxy_hops)


def _offered_key() -> str:
    return bearer(request.headers.get("Authorization")) or ""


def _api_key_bucket() -> str:
    """A producer's bucket: a digest of the key it offered, never the key itself
    (the bucket name is stored in Redis and may be logged)."""
    return "key:" + hashlib.sha256(_offered_key().encode()).hexdigest()[:24]


def _is_producer() -> bool:
    """A request carrying the real API key is limited per key, not per address: a
    producer service often sends everything from one address."""
    return same_secret(_offered_key(), _settings().notify_api_key)


def _is_exempt() -> bool:
    return request.blueprint in EXEMPT_BLUEPRINTS or _is_producer()


def register_limits(app: Flask, settings: Settings) -> Limiter:
    """Flask-Limiter per client IP, plus a per-key limit on the producer route."""
    expire_memory_limits_inline()
    limiter = Limiter(
        key_func=_request_ip,
        app=app,
        default_limits=[settings.rate_limit_http] if settings.rate_limit_http else [],
        default_limits_exempt_when=_is_exempt,
        storage_uri=settings.rate_limit_storage_url,
        # O(1) per check in memory and in Redis: two counters a key, weighted. The
        # moving window kept a timestamp per request and inserted at the list's front.
        strategy=WINDOW_STRATEGY,
        headers_enabled=True,
        # Flask-Limiter sets Retry-After on every response to when the window resets,
        # over any value a handler chose (a 503's 5 s became 60 s, and 200s carried
        # it). Its value goes under its own name; Retry-After stays on 429 and 503.
        header_name_mapping={HeaderNames.RETRY_AFTER: "X-RateLimit-Retry-After"},
        # A Redis outage must not turn every request into a 500: limits fall back to
        # this process's memory until Redis answers again.
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        key_prefix="notif-limits",
    )
    if settings.rate_limit_api_key and PRODUCER_ENDPOINT in app.view_functions:
        view = app.view_functions[PRODUCER_ENDPOINT]
        app.view_functions[PRODUCER_ENDPOINT] = limiter.limit(
            settings.rate_limit_api_key, key_func=_api_key_bucket, override_defaults=False,
        )(view)

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        current = limiter.current_limit
        wait = 1
        if current:  # until the window frees a slot: never more than the window itself
            wait = min(math.ceil(current.reset_at - time.time()), current.limit.get_expiry())
        return error_response(429, "rate_limited", f"rate limit exceeded ({exc.description})",
                              {"Retry-After": str(max(wait, 1))})

    return limiter


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

    KEY = "notifier.limits"

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
    return current_app.extensions[SocketLimits.KEY]


def register_socket_limits(app: Flask, settings: Settings) -> SocketLimits:
    limits = SocketLimits(settings)
    app.extensions[SocketLimits.KEY] = limits
    return limits


def throttled(handler: Callable) -> Callable:
    """Socket event handlers: a token bucket per socket. Over the rate, the event is
    refused with an error ack; a flood that keeps going ends the connection."""

    @wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verdict = socket_limits().allow_event(request.sid)
        if verdict is None:
            # The whole Engine.IO session goes, not only the namespace: a new CONNECT
            # on the same session would start with a fresh bucket.
            log.warning("socket flood: closing %s", request.sid)
            close_connection(socketio.server, request.sid)
            return None
        if verdict is False:
            raise RateLimited()
        return handler(*args, **kwargs)

    return wrapper
