"""Settings: every environment variable the service reads, parsed once, grouped by
concern. docs/CONFIGURATION.md's table documents each one; a test keeps the two
in agreement (tests/unit/config/test_settings.py).

Three are also read before the settings exist, where they must be: ``ASYNC_MODE``
by ``python app.py`` to monkey-patch first, ``REDIS_URL`` by utils/extensions.py to
decide whether python-socketio may import redis, and ``PROMETHEUS_MULTIPROC_DIR``
by prometheus_client and gunicorn.conf.py. They are parsed and checked here too.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from utils.config.values import ConfigError, Env

__all__ = ["ConfigError", "Settings", "load_settings"]

ASYNC_MODES = ("eventlet", "gevent", "threading")
TRANSPORT_CHOICES = ("polling", "websocket")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MIN_SECRET_BYTES = 32
MAX_LEEWAY_SECONDS = 30
DEFAULT_FRONTEND_URL = "http://localhost:3000"
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
                  "ES512", "PS256", "PS384", "PS512", "EdDSA")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The push services real browsers subscribe with: Apple (Safari, iOS), Google (Chrome,
# Edge on Android), Mozilla (Firefox) and Microsoft (WNS, Edge on Windows: its hosts
# are regional subdomains).
DEFAULT_PUSH_ORIGINS = ("https://web.push.apple.com", "https://fcm.googleapis.com",
                        "https://updates.push.services.mozilla.com",
                        "https://*.notify.windows.com")
DEFAULT_VAPID_SUBJECT = "mailto:notifications@example.com"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_PUSH_ORIGIN = re.compile(r"(https?)://(\*\.)?([A-Za-z0-9.-]+|\[::1\])(:\d{1,5})?")


@dataclass(frozen=True)
class Settings:
    # -- the service
    app_env: str = "development"
    port: int = 8000
    instance_path: str = "instance"
    frontend_urls: tuple[str, ...] = (DEFAULT_FRONTEND_URL,)
    notify_api_key: str = ""
    debug_page: bool = True
    socketio_client_url: str | None = None
    # -- user tokens
    jwt_secret_keys: tuple[str, ...] = ()
    jwt_key_ids: tuple[str | None, ...] = ()
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_user_claim: str = "sub"
    jwt_leeway: int = 10
    jwt_jwks_url: str | None = None
    jwt_jwks_cache_seconds: int = 300
    jwt_jwks_timeout: float = 5.0
    jwt_jwks_cooldown: float = 30.0
    # -- storage and the message queue
    database_url: str = ""
    retention_days: int = 90
    redis_url: str | None = None
    redis_catch_up_limit: int = 5000
    # -- the transactional outbox (utils/outbox/, docs/OUTBOX.md)
    outbox_enabled: bool = False
    outbox_database_url: str = ""  # DATABASE_URL unless set
    outbox_batch_size: int = 500
    outbox_poll_seconds: float = 1.0
    # -- sockets
    async_mode: str = "eventlet"
    ping_interval: int = 25
    ping_timeout: int = 60
    transports: tuple[str, ...] = ("polling", "websocket")
    max_http_buffer_size: int = 32 * 1024
    token_sweep_interval: float = 1.0
    connect_timeout: float = 10.0
    # -- limits
    rate_limit_http: str | None = "600/minute"
    rate_limit_api_key: str | None = "6000/minute"
    rate_limit_storage_url: str = "memory://"
    connect_rate_per_ip: int = 300
    max_pending_sessions_per_ip: int = 30
    unknown_session_rate_per_ip: int = 600
    max_sockets_per_user: int = 20
    socket_event_rate: float = 5.0
    socket_event_burst: int = 20
    socket_flood_limit: int = 50
    socket_read_rate: int = 32 * 1024
    trusted_proxies: tuple[str, ...] = ()
    trusted_proxy_hops: int = 0
    # -- operations
    log_level: str = "INFO"
    socketio_logger: bool = False
    metrics_token: str | None = None
    metrics_public: bool = False
    gc_tuning: bool = True
    gc_pause_log: str | None = None
    # -- Web Push
    vapid_private_key: str | None = None
    vapid_public_key: str | None = None
    vapid_subject: str = DEFAULT_VAPID_SUBJECT
    web_push_endpoint_origins: tuple[str, ...] = DEFAULT_PUSH_ORIGINS
    push_after: float = 10.0
    push_ttl: int = 86400
    push_collapse_seconds: float = 5.0
    max_push_subscriptions_per_user: int = 10
    # -- development secrets generated into instance/ by this start
    generated: tuple[str, ...] = field(default=())

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def metrics_closed(self) -> bool:
        """No token and not declared public: /metrics answers 403 (production's default)."""
        return not self.metrics_token and not self.metrics_public

    @property
    def signing_key(self) -> str | None:
        return self.jwt_secret_keys[0] if self.jwt_secret_keys else None

    @property
    def push_enabled(self) -> bool:
        return self.vapid_private_key is not None

    def secrets_to_redact(self) -> list[str]:
        """Values that must never appear in a log line."""
        values = [*self.jwt_secret_keys, self.notify_api_key, self.metrics_token,
                  self.vapid_private_key]
        return [v for v in values if v]


def load_settings(environ: Env | dict[str, str], default_instance: Path) -> Settings:
    """Parse the environment once. Every group of settings is read even when an
    earlier one failed, so one ConfigError names every problem at once (one line
    each): on Railway each failed start is a failed deploy."""
    env = environ if isinstance(environ, Env) else Env(environ)
    app_env = _app_env(env)
    production = app_env == "production"
    instance_path = Path(env.text("INSTANCE_PATH") or default_instance).resolve()
    generated: list[str] = []
    problems: list[str] = []

    def read(group: Callable[..., dict[str, object]], *args: object) -> dict[str, object]:
        try:
            return group(env, *args)
        except ConfigError as exc:
            problems.extend(str(exc).splitlines())
            return {}

    groups = [read(_tokens, production, instance_path, generated),
              read(_frontend, production), read(_service, production, instance_path, generated),
              read(_storage, production, instance_path), read(_sockets), read(_limits),
              read(_operations, production), read(_push, production, instance_path, generated)]
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} settings stop the start:\n"
                          + "\n".join(f"  - {problem}" for problem in problems))
    values: dict[str, object] = {}
    for group in groups:
        values.update(group)
    return Settings(app_env=app_env, **values, generated=tuple(generated))


# ------------------------------------------------------------------ the service

def _app_env(env: Env) -> str:
    raw = env.raw("APP_ENV").lower()
    if raw in ("production", "prod"):
        return "production"
    if raw in ("development", "dev", "test", "testing"):
        return "development"
    if raw:
        raise ConfigError(f"APP_ENV must be development or production, got {raw!r}")
    return "production" if env.raw("RAILWAY_ENVIRONMENT") else "development"


def _service(env: Env, production: bool, instance_path: Path,
             generated: list[str]) -> dict[str, object]:
    api_key = env.raw("NOTIFY_API_KEY")
    if not api_key and not production:
        api_key = _dev_secret(instance_path, "NOTIFY_API_KEY", generated)
    return {
        "port": env.integer("PORT", 8000, 1, 65535),
        "instance_path": str(instance_path),
        "notify_api_key": api_key,
        "debug_page": env.flag("DEBUG_PAGE", True),
        "socketio_client_url": _client_url(env),
    }


def _frontend(env: Env, production: bool) -> dict[str, object]:
    return {"frontend_urls": _frontend_urls(env, production)}


def _frontend_urls(env: Env, production: bool) -> tuple[str, ...]:
    if not env.is_set("FRONTEND_URLS"):
        if production:
            raise ConfigError(
                "FRONTEND_URLS is required in production: the exact origins of your "
                "front end, comma-separated, e.g. https://app.example.com"
            )
        return (DEFAULT_FRONTEND_URL,)
    urls = [u.rstrip("/") for u in env.items("FRONTEND_URLS")]
    if not urls:
        raise ConfigError("FRONTEND_URLS is empty: list the exact front-end origins")
    if "*" in urls:
        raise ConfigError(
            "FRONTEND_URLS must not be '*': a wildcard with credentials lets any site "
            "open sockets as your users; list the exact origins"
        )
    for url in urls:
        if not url.startswith(("http://", "https://")) or url.count("/") != 2:
            raise ConfigError(
                f"FRONTEND_URLS entry {url!r} is not an origin like https://app.example.com"
            )
    return tuple(urls)


def _client_url(env: Env) -> str | None:
    url = env.raw("SOCKETIO_CLIENT_URL")
    if url and (not url.startswith(("https://", "http://", "/"))
                or any(c in url for c in "\"'<> ")):
        raise ConfigError(f"SOCKETIO_CLIENT_URL must be an http(s) URL or a path, got {url!r}")
    return url or None


def _dev_secret(instance_path: Path, name: str, generated: list[str],
                make: Callable[[], str] = lambda: secrets.token_urlsafe(48)) -> str:
    """A development secret generated once (by ``make``) and kept under instance/."""
    path = instance_path / f"{name.lower()}.txt"
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    instance_path.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    generated.append(name)
    return value


# ------------------------------------------------------------------ user tokens

def _tokens(env: Env, production: bool, instance_path: Path,
            generated: list[str]) -> dict[str, object]:
    public_key = env.raw("JWT_PUBLIC_KEY").replace("\\n", "\n") or None
    key_ids, secret_keys = _secret_keys(env)
    jwks_url = env.raw("JWT_JWKS_URL") or None
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise ConfigError(f"JWT_JWKS_URL must be an http(s) URL, got {jwks_url!r}")
    if not secret_keys and not public_key and not jwks_url:
        if production:
            raise ConfigError(
                "JWT_SECRET_KEY is required in production (32+ random bytes, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
                "or set JWT_PUBLIC_KEY"
            )
        secret_keys = (_dev_secret(instance_path, "JWT_SECRET_KEY", generated),)
        key_ids = (None,)
    if production and any(len(k.encode()) < MIN_SECRET_BYTES for k in secret_keys):
        raise ConfigError(f"JWT_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes")
    return {
        "jwt_secret_keys": secret_keys,
        "jwt_key_ids": key_ids,
        "jwt_public_key": public_key,
        "jwt_algorithms": _algorithms(env, bool(public_key or jwks_url)),
        "jwt_audience": env.text("JWT_AUDIENCE"),
        "jwt_issuer": env.text("JWT_ISSUER"),
        "jwt_user_claim": env.text("JWT_USER_CLAIM", "sub"),
        "jwt_leeway": env.integer("JWT_LEEWAY", 10, 0, MAX_LEEWAY_SECONDS),
        "jwt_jwks_url": jwks_url,
        "jwt_jwks_cache_seconds": env.integer("JWT_JWKS_CACHE_SECONDS", 300, 1, 86400),
        "jwt_jwks_timeout": env.seconds("JWT_JWKS_TIMEOUT", 5.0, 0.1, 60),
        "jwt_jwks_cooldown": env.seconds("JWT_JWKS_COOLDOWN", 30.0, 0, 3600),
    }


def _secret_keys(env: Env) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    """JWT_SECRET_KEY entries, each ``secret`` or ``kid:secret`` (a kid is 1-64 of
    A-Z a-z 0-9 . _ -); a secret that itself contains ':' needs a kid in front."""
    kids: list[str | None] = []
    keys: list[str] = []
    for entry in env.items("JWT_SECRET_KEY"):
        kid, sep, secret = entry.partition(":")
        named = bool(sep and _KID.fullmatch(kid) and secret)
        kids.append(kid if named else None)
        keys.append(secret if named else entry)
    named_kids = [k for k in kids if k]
    if len(named_kids) != len(set(named_kids)):
        raise ConfigError("JWT_SECRET_KEY names the same kid twice")
    return tuple(kids), tuple(keys)


def _algorithms(env: Env, has_public_key: bool) -> tuple[str, ...]:
    algorithms = env.items("JWT_ALGORITHMS", "RS256" if has_public_key else "HS256")
    if any(a.lower() == "none" for a in algorithms):
        raise ConfigError("JWT_ALGORITHMS must not contain 'none'")
    unknown = [a for a in algorithms if a not in JWT_ALGORITHMS]
    if unknown:
        raise ConfigError(f"JWT_ALGORITHMS has unknown algorithm(s): {', '.join(unknown)}")
    if has_public_key and any(a.startswith("HS") for a in algorithms):
        # Accepting HS* beside a public key invites key confusion: the public key,
        # which is not secret, would become an HMAC secret.
        raise ConfigError("JWT_ALGORITHMS must not mix HS* with JWT_PUBLIC_KEY")
    return tuple(algorithms)


# ------------------------------------------------------------------ storage and queue

def _storage(env: Env, production: bool, instance_path: Path) -> dict[str, object]:
    database_url = _database_url(env, production, instance_path)
    return {
        "database_url": database_url,
        **_outbox(env, database_url),
        "retention_days": env.integer("NOTIFICATION_RETENTION_DAYS", 90, 1, 36500),
        # rediss:// is Redis over TLS (redis-py reads TLS options such as
        # ssl_ca_certs from the query string); the URL may hold a password.
        "redis_url": env.url("REDIS_URL", REDIS_SCHEMES, secret=True),
        "redis_catch_up_limit": env.integer("REDIS_CATCH_UP_LIMIT", 5000, 1, 100_000),
    }


def _database_url(env: Env, production: bool, instance_path: Path) -> str:
    url = env.raw("DATABASE_URL")
    if not url:
        if production:
            # A default file would live in the deploy's own filesystem, which a platform
            # such as Railway replaces on the next deploy, notifications and all.
            raise ConfigError(
                "DATABASE_URL is required in production: a PostgreSQL URL (on Railway, "
                "${{Postgres.DATABASE_URL}}), or sqlite:////path/notifications.db on a "
                "persistent volume"
            )
        return f"sqlite:///{instance_path / 'notifications.db'}"
    return _pg8000(url)


def _pg8000(url: str) -> str:
    # Railway's and Heroku's plugins hand out postgres://; SQLAlchemy wants a dialect,
    # and pg8000 is pure Python, so it cooperates with eventlet's and gevent's hubs.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+pg8000://" + url[len(prefix):]
    return url


def _outbox(env: Env, database_url: str) -> dict[str, object]:
    """The outbox consumer: off by default, PostgreSQL only (its table, its
    ``FOR UPDATE SKIP LOCKED`` and its LISTEN are PostgreSQL's)."""
    enabled = env.flag("OUTBOX_ENABLED", False)
    outbox_url = _pg8000(env.raw("OUTBOX_DATABASE_URL")) or database_url
    batch_size = env.integer("OUTBOX_BATCH_SIZE", 500, 1, 5000)
    poll_seconds = env.seconds("OUTBOX_POLL_SECONDS", 1.0, 0.05, 3600)
    if enabled:
        # The URLs may hold passwords: the messages name the setting, never the value.
        if database_url.startswith("sqlite"):
            raise ConfigError(
                "OUTBOX_ENABLED needs PostgreSQL, but DATABASE_URL is SQLite: SQLite "
                "deployments do not get the outbox (docs/OUTBOX.md); producers use "
                "POST /api/notifications, or unset OUTBOX_ENABLED")
        if not outbox_url.startswith("postgresql"):
            what = "SQLite" if outbox_url.startswith("sqlite") else "not a PostgreSQL URL"
            raise ConfigError(
                f"OUTBOX_ENABLED needs PostgreSQL, but OUTBOX_DATABASE_URL is {what}: "
                "the outbox lives in a PostgreSQL database (docs/OUTBOX.md)")
    return {
        "outbox_enabled": enabled,
        "outbox_database_url": outbox_url,
        "outbox_batch_size": batch_size,
        "outbox_poll_seconds": poll_seconds,
    }


# ------------------------------------------------------------------ sockets

def _sockets(env: Env) -> dict[str, object]:
    transports = env.items("SOCKETIO_TRANSPORTS", "polling,websocket")
    if not transports or any(t not in TRANSPORT_CHOICES for t in transports):
        raise ConfigError("SOCKETIO_TRANSPORTS must be polling,websocket or websocket, "
                          f"got {env.raw('SOCKETIO_TRANSPORTS')!r}")
    return {
        "async_mode": env.choice("ASYNC_MODE", "eventlet", ASYNC_MODES),
        "ping_interval": env.integer("PING_INTERVAL", 25, 1, 3600),
        "ping_timeout": env.integer("PING_TIMEOUT", 60, 1, 3600),
        "transports": tuple(transports),
        "max_http_buffer_size": env.integer("MAX_HTTP_BUFFER_SIZE", 32 * 1024, 1024,
                                            16 * 1024**2),
        "token_sweep_interval": env.seconds("TOKEN_SWEEP_INTERVAL", 1.0, 0.05, 60),
        "connect_timeout": env.seconds("CONNECT_TIMEOUT", 10.0, 0.5, 300),
    }


# ------------------------------------------------------------------ limits

def _limits(env: Env) -> dict[str, object]:
    hops, networks = _trusted_proxies(env)
    return {
        "rate_limit_http": env.rate("RATE_LIMIT_HTTP", "600/minute"),
        "rate_limit_api_key": env.rate("RATE_LIMIT_API_KEY", "6000/minute"),
        "rate_limit_storage_url": env.raw("RATE_LIMIT_STORAGE_URL") or env.raw("REDIS_URL")
        or "memory://",
        "connect_rate_per_ip": env.integer("CONNECT_RATE_PER_IP", 300, 0, 1_000_000),
        "max_pending_sessions_per_ip": env.integer("MAX_PENDING_SESSIONS_PER_IP", 30, 0,
                                                   1_000_000),
        "unknown_session_rate_per_ip": env.integer("UNKNOWN_SESSION_RATE_PER_IP", 600, 0,
                                                   1_000_000),
        "max_sockets_per_user": env.integer("MAX_SOCKETS_PER_USER", 20, 0, 100_000),
        "socket_event_rate": env.seconds("SOCKET_EVENT_RATE", 5.0, 0.01, 10_000),
        "socket_event_burst": env.integer("SOCKET_EVENT_BURST", 20, 1, 100_000),
        "socket_flood_limit": env.integer("SOCKET_FLOOD_LIMIT", 50, 1, 1_000_000),
        "socket_read_rate": env.integer("SOCKET_READ_RATE", 32 * 1024, 1024, 1024**3),
        "trusted_proxies": networks,
        "trusted_proxy_hops": hops,
    }


def _trusted_proxies(env: Env) -> tuple[int, tuple[str, ...]]:
    """A hop count (the nearest N proxies, whatever their addresses), or networks."""
    raw = env.raw("TRUSTED_PROXIES")
    if raw.isdigit():
        hops = int(raw)
        if not 1 <= hops <= 10:
            raise ConfigError(f"TRUSTED_PROXIES as a hop count must be 1 to 10, got {hops}")
        return hops, ()
    networks = []
    for item in env.items("TRUSTED_PROXIES"):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"TRUSTED_PROXIES entry {item!r} is not an IP or CIDR") from None
    return 0, tuple(networks)


# ------------------------------------------------------------------ operations

def _operations(env: Env, production: bool) -> dict[str, object]:
    directory = env.raw("PROMETHEUS_MULTIPROC_DIR")
    if directory and not Path(directory).is_dir():
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR {directory!r} is not a directory: create it "
            "(empty) before gunicorn starts, or unset it"
        )
    return {
        "log_level": env.choice("LOG_LEVEL", "info", LOG_LEVELS).upper(),
        "socketio_logger": env.flag("SOCKETIO_LOGGER", False),
        "metrics_token": env.text("METRICS_TOKEN"),
        # Production without a token: /metrics is closed unless this says otherwise.
        "metrics_public": env.flag("METRICS_PUBLIC", not production),
        "gc_tuning": env.flag("GC_TUNING", True),
        "gc_pause_log": env.text("GC_PAUSE_LOG"),
    }


# ------------------------------------------------------------------ Web Push

def _push(env: Env, production: bool, instance_path: Path,
          generated: list[str]) -> dict[str, object]:
    from utils.config import vapid as keys  # cryptography: loaded only to read the settings

    raw = env.raw("VAPID_PRIVATE_KEY").replace("\\n", "\n")
    subject = env.raw("VAPID_SUBJECT")
    if not raw and not production:
        raw = _dev_secret(instance_path, "VAPID_PRIVATE_KEY", generated,
                          lambda: keys.generate()[0])
    public_key = None
    if raw:
        try:
            public_key = keys.public_key_of(keys.load_private_key(raw))
        except ValueError as exc:  # the message never holds the key
            raise ConfigError(f"VAPID_PRIVATE_KEY {exc}") from None
        if not subject and production:
            raise ConfigError("VAPID_SUBJECT is required with VAPID_PRIVATE_KEY: a "
                              "mailto: address or https: URL push services can reach you at")
    subject = subject or DEFAULT_VAPID_SUBJECT
    problem = keys.subject_problem(subject)
    if problem:
        raise ConfigError(f"VAPID_SUBJECT {problem}, got {subject!r}")
    return {
        "vapid_private_key": raw or None,
        "vapid_public_key": public_key,
        "vapid_subject": subject,
        "web_push_endpoint_origins": _push_origins(env),
        "push_after": env.seconds("PUSH_AFTER", 10.0, 0.5, 86400),
        # Never 0: a push service drops a TTL-0 message for a device that is asleep.
        "push_ttl": env.integer("PUSH_TTL", 86400, 60, 28 * 86400),
        # How long the first push of a collapse_key waits for others to fold into it.
        "push_collapse_seconds": env.seconds("PUSH_COLLAPSE_SECONDS", 5.0, 0, 300),
        "max_push_subscriptions_per_user": env.integer("MAX_PUSH_SUBSCRIPTIONS_PER_USER",
                                                       10, 1, 1000),
    }


def _push_origins(env: Env) -> tuple[str, ...]:
    """The origins push may be sent to: https, or http for a loopback host (a local
    test push service); ``*.`` before a host allows its subdomains."""
    if not env.is_set("WEB_PUSH_ENDPOINT_ORIGINS"):
        return DEFAULT_PUSH_ORIGINS
    origins = []
    for item in env.items("WEB_PUSH_ENDPOINT_ORIGINS"):
        origin = item.rstrip("/").lower()
        match = _PUSH_ORIGIN.fullmatch(origin)
        if not match:
            raise ConfigError(f"WEB_PUSH_ENDPOINT_ORIGINS entry {item!r} is not an origin "
                              "like https://push.example.com")
        scheme, wildcard, host = match.group(1), match.group(2), match.group(3)
        if scheme == "http" and (wildcard or host not in LOOPBACK_HOSTS):
            raise ConfigError(f"WEB_PUSH_ENDPOINT_ORIGINS entry {item!r} must be https "
                              "(http is accepted only for localhost, 127.0.0.1 or [::1])")
        origins.append(origin)
    if not origins:
        raise ConfigError("WEB_PUSH_ENDPOINT_ORIGINS is empty: list push service origins")
    return tuple(origins)
