"""Configuration: every environment variable the service reads is parsed here.

Variables (see the README's configuration table for the full story):

    APP_ENV                 development (default) or production. Production is also
                            implied by RAILWAY_ENVIRONMENT being set.
    PORT                    listening port for ``python app.py`` (default 8000).
    JWT_SECRET_KEY          HMAC key(s) for user tokens; comma-separated to accept a
                            previous key during rotation (the first one signs).
                            Required in production (32+ bytes) unless JWT_PUBLIC_KEY is set.
    JWT_PUBLIC_KEY          PEM public key for RS256/ES256 tokens issued elsewhere.
    JWT_ALGORITHMS          comma list, default HS256 (RS256 with a public key). ``none``
                            is never accepted.
    JWT_AUDIENCE            required ``aud`` when set.
    JWT_ISSUER              required ``iss`` when set.
    JWT_USER_CLAIM          claim that names the user (default ``sub``).
    JWT_LEEWAY              clock skew allowed on exp/nbf/iat, seconds, 0..30 (default 10).
    FRONTEND_URLS           exact allowed origins, comma-separated. Required in production.
    DATABASE_URL            SQLAlchemy URL. Required in production (PostgreSQL, or
                            sqlite:////path on a volume); development defaults to
                            SQLite under instance/.
    REDIS_URL               Socket.IO message queue; unset means a single process.
    NOTIFY_API_KEY          producer key for POST /api/notifications.
    ASYNC_MODE              eventlet (default) or gevent.
    PING_INTERVAL           Engine.IO ping interval, seconds (default 25).
    PING_TIMEOUT            Engine.IO ping timeout, seconds (default 60).
    SOCKETIO_TRANSPORTS     polling,websocket (default) or websocket.
    MAX_HTTP_BUFFER_SIZE    largest Engine.IO message accepted, and the largest total of
                            a fragmented WebSocket message, bytes (default 32768: a
                            mark_read of 1,000 ids is about 21 KB).
    TOKEN_SWEEP_INTERVAL    how often connected sockets are checked for expired tokens,
                            seconds (default 1).
    NOTIFICATION_RETENTION_DAYS  default age for ``flask prune`` (default 90).
    DEBUG_PAGE              0 turns GET /debug off (default on).
    SOCKETIO_CLIENT_URL     where /debug loads socket.io-client from; default: served
                            from node_modules when installed.
    LOG_LEVEL               root log level (default INFO).
    SOCKETIO_LOGGER         1 turns on the Socket.IO and Engine.IO loggers (redacted).
    METRICS_TOKEN           when set, GET /metrics needs Authorization: Bearer <it>;
                            unset, /metrics is open (see docs/DEPLOYMENT.md).
    PROMETHEUS_MULTIPROC_DIR  an existing directory: prometheus_client's multiprocess
                            mode, for several gunicorn workers under one master.

Security (see SECURITY.md):

    JWT_SECRET_KEY entries may be ``kid:secret``; a token whose header names a known
                            ``kid`` is checked against that key only.
    JWT_JWKS_URL            http(s) URL of an identity provider's JWK Set; tokens are
                            verified with the key its ``kid`` names (asymmetric only).
    JWT_JWKS_CACHE_SECONDS  how long a fetched JWK Set is reused (default 300).
    JWT_JWKS_TIMEOUT        JWKS fetch timeout, seconds (default 5).
    JWT_JWKS_COOLDOWN       least seconds between refreshes forced by an unknown kid
                            (default 30).
    RATE_LIMIT_HTTP         HTTP limit per client IP, e.g. "600/minute"; 0 turns it off.
    RATE_LIMIT_API_KEY      limit per producer API key (default "6000/minute"); 0 off.
    RATE_LIMIT_STORAGE_URL  limits' storage; default REDIS_URL when set, else memory://.
    CONNECT_RATE_PER_IP     Socket.IO connection attempts per client IP per minute
                            (default 300; new Engine.IO sessions: twice that); 0 off.
    MAX_SOCKETS_PER_USER    concurrent sockets one user may hold, per process (default
                            20); 0 turns it off.
    SOCKET_EVENT_RATE       events per second a socket may send, sustained (default 5).
    SOCKET_EVENT_BURST      events a socket may send at once (default 20).
    SOCKET_FLOOD_LIMIT      refused events in a row that end the connection (default 50).
    CONNECT_TIMEOUT         seconds a new Engine.IO session has to send its Socket.IO
                            CONNECT; it is closed after that (default 10).
    MAX_PENDING_SESSIONS_PER_IP  Engine.IO sessions one client address may hold open
                            before their CONNECT (default 30); 0 turns it off.
    SOCKET_READ_RATE        bytes a second read from one connection, sustained
                            (default 32768); bursts of two MAX_HTTP_BUFFER_SIZE.
    TRUSTED_PROXIES         IPs or CIDRs of proxies whose X-Forwarded-For is believed
                            (default none: the peer address is the client), or a bare
                            number N: the nearest N proxies, whatever their addresses
                            (TRUSTED_PROXIES=1 on Railway, whose edge appends the client).

Read outside this module, by gunicorn.conf.py's worker hook before the app loads:

    GC_TUNING               0 turns off gc.freeze() and the tuned GC thresholds.
    GC_PAUSE_LOG            a file each worker appends its GC pauses to (bench only).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ASYNC_MODES = ("eventlet", "gevent", "threading")
TRANSPORT_CHOICES = ("polling", "websocket")
MIN_SECRET_BYTES = 32
MAX_LEEWAY_SECONDS = 30
DEFAULT_FRONTEND_URL = "http://localhost:3000"


class ConfigError(RuntimeError):
    """A configuration value that prevents start-up; the message is one clear line."""


@dataclass(frozen=True)
class Settings:
    app_env: str = "development"
    port: int = 8000
    jwt_secret_keys: tuple[str, ...] = ()
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_user_claim: str = "sub"
    jwt_leeway: int = 10
    frontend_urls: tuple[str, ...] = (DEFAULT_FRONTEND_URL,)
    database_url: str = ""
    redis_url: str | None = None
    notify_api_key: str = ""
    async_mode: str = "eventlet"
    ping_interval: int = 25
    ping_timeout: int = 60
    transports: tuple[str, ...] = ("polling", "websocket")
    max_http_buffer_size: int = 32 * 1024
    token_sweep_interval: float = 1.0
    retention_days: int = 90
    debug_page: bool = True
    socketio_client_url: str | None = None
    log_level: str = "INFO"
    socketio_logger: bool = False
    metrics_token: str | None = None
    metrics_multiproc_dir: str | None = None
    jwt_key_ids: tuple[str | None, ...] = ()
    jwt_jwks_url: str | None = None
    jwt_jwks_cache_seconds: int = 300
    jwt_jwks_timeout: float = 5.0
    jwt_jwks_cooldown: float = 30.0
    rate_limit_http: str | None = "600/minute"
    rate_limit_api_key: str | None = "6000/minute"
    rate_limit_storage_url: str = "memory://"
    connect_rate_per_ip: int = 300
    max_sockets_per_user: int = 20
    socket_event_rate: float = 5.0
    socket_event_burst: int = 20
    socket_flood_limit: int = 50
    connect_timeout: float = 10.0
    max_pending_sessions_per_ip: int = 30
    socket_read_rate: int = 32 * 1024
    trusted_proxies: tuple[str, ...] = ()
    trusted_proxy_hops: int = 0
    generated: tuple[str, ...] = field(default=())

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def signing_key(self) -> str | None:
        return self.jwt_secret_keys[0] if self.jwt_secret_keys else None

    def secrets_to_redact(self) -> list[str]:
        """Values that must never appear in a log line."""
        values = [*self.jwt_secret_keys, self.notify_api_key, self.metrics_token]
        return [v for v in values if v]


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def _app_env(env: Mapping[str, str]) -> str:
    raw = (env.get("APP_ENV") or "").strip().lower()
    if raw in ("production", "prod"):
        return "production"
    if raw in ("development", "dev", "test", "testing"):
        return "development"
    if raw:
        raise ConfigError(f"APP_ENV must be development or production, got {raw!r}")
    return "production" if env.get("RAILWAY_ENVIRONMENT") else "development"


def _frontend_urls(env: Mapping[str, str], production: bool) -> tuple[str, ...]:
    raw = env.get("FRONTEND_URLS")
    if raw is None:
        if production:
            raise ConfigError(
                "FRONTEND_URLS is required in production: the exact origins of your "
                "front end, comma-separated, e.g. https://app.example.com"
            )
        return (DEFAULT_FRONTEND_URL,)
    urls = [u.rstrip("/") for u in _split(raw)]
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


def _algorithms(env: Mapping[str, str], has_public_key: bool) -> tuple[str, ...]:
    default = "RS256" if has_public_key else "HS256"
    algorithms = _split(env.get("JWT_ALGORITHMS") or default)
    if any(a.lower() == "none" for a in algorithms):
        raise ConfigError("JWT_ALGORITHMS must not contain 'none'")
    known = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
             "ES512", "PS256", "PS384", "PS512", "EdDSA"}
    unknown = [a for a in algorithms if a not in known]
    if unknown:
        raise ConfigError(f"JWT_ALGORITHMS has unknown algorithm(s): {', '.join(unknown)}")
    symmetric = [a for a in algorithms if a.startswith("HS")]
    if has_public_key and symmetric:
        # Accepting HS* beside a public key invites key confusion: the public key,
        # which is not secret, would become an HMAC secret.
        raise ConfigError("JWT_ALGORITHMS must not mix HS* with JWT_PUBLIC_KEY")
    return tuple(algorithms)


def _transports(env: Mapping[str, str]) -> tuple[str, ...]:
    transports = _split(env.get("SOCKETIO_TRANSPORTS") or "polling,websocket")
    bad = [t for t in transports if t not in TRANSPORT_CHOICES]
    if bad or not transports:
        raise ConfigError(
            "SOCKETIO_TRANSPORTS must be polling,websocket or websocket, "
            f"got {env.get('SOCKETIO_TRANSPORTS')!r}"
        )
    return tuple(transports)


def _client_url(env: Mapping[str, str]) -> str | None:
    url = (env.get("SOCKETIO_CLIENT_URL") or "").strip()
    if not url:
        return None
    if not url.startswith(("https://", "http://", "/")) or any(c in url for c in "\"'<> "):
        raise ConfigError(
            f"SOCKETIO_CLIENT_URL must be an http(s) URL or a path, got {url!r}"
        )
    return url


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(env: Mapping[str, str]) -> str | None:
    """The message queue's URL; rediss:// is Redis over TLS (redis-py reads TLS
    options such as ssl_ca_certs from the query string)."""
    url = (env.get("REDIS_URL") or "").strip()
    if url and not url.lower().startswith(REDIS_SCHEMES):
        # The value may hold a password: name the rule, not the value.
        raise ConfigError(f"REDIS_URL must start with {', '.join(REDIS_SCHEMES)}")
    return url or None


def _database_url(env: Mapping[str, str], instance_path: Path) -> str:
    url = (env.get("DATABASE_URL") or "").strip()
    if not url:
        if _app_env(env) == "production":
            # A default file would live in the deploy's own filesystem, which a platform
            # such as Railway replaces on the next deploy, notifications and all.
            raise ConfigError(
                "DATABASE_URL is required in production: a PostgreSQL URL (on Railway, "
                "${{Postgres.DATABASE_URL}}), or sqlite:////path/notifications.db on a "
                "persistent volume"
            )
        return f"sqlite:///{instance_path / 'notifications.db'}"
    # Railway's and Heroku's plugins hand out postgres://; SQLAlchemy wants a dialect,
    # and pg8000 is pure Python, so it cooperates with eventlet's and gevent's hubs.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+pg8000://" + url[len(prefix):]
    return url


def _dev_secret(instance_path: Path, name: str, generated: list[str]) -> str:
    """A development secret generated once and kept under instance/."""
    path = instance_path / f"{name.lower()}.txt"
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    instance_path.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    generated.append(name)
    return value


def load_settings(env: Mapping[str, str], instance_path: Path) -> Settings:
    """Parse the environment once, failing fast with one clear line."""
    app_env = _app_env(env)
    production = app_env == "production"
    generated: list[str] = []

    public_key = (env.get("JWT_PUBLIC_KEY") or "").strip() or None
    if public_key:
        public_key = public_key.replace("\\n", "\n")
    key_ids, secret_keys = _secret_keys(env)
    jwks_url = _jwks_url(env)
    if not secret_keys and not public_key and not jwks_url:
        if production:
            raise ConfigError(
                "JWT_SECRET_KEY is required in production (32+ random bytes, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
                "or set JWT_PUBLIC_KEY"
            )
        secret_keys = (_dev_secret(instance_path, "JWT_SECRET_KEY", generated),)
        key_ids = (None,)
    short = [k for k in secret_keys if len(k.encode()) < MIN_SECRET_BYTES]
    if short and production:
        raise ConfigError(f"JWT_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes")

    api_key = (env.get("NOTIFY_API_KEY") or "").strip()
    if not api_key and not production:
        api_key = _dev_secret(instance_path, "NOTIFY_API_KEY", generated)

    async_mode = (env.get("ASYNC_MODE") or "eventlet").strip().lower()
    if async_mode not in ASYNC_MODES:
        raise ConfigError(f"ASYNC_MODE must be eventlet or gevent, got {async_mode!r}")

    log_level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    return Settings(
        app_env=app_env,
        port=_int(env, "PORT", 8000, 1, 65535),
        jwt_secret_keys=secret_keys,
        jwt_public_key=public_key,
        jwt_algorithms=_algorithms(env, bool(public_key or jwks_url)),
        jwt_audience=(env.get("JWT_AUDIENCE") or "").strip() or None,
        jwt_issuer=(env.get("JWT_ISSUER") or "").strip() or None,
        jwt_user_claim=(env.get("JWT_USER_CLAIM") or "sub").strip(),
        jwt_leeway=_int(env, "JWT_LEEWAY", 10, 0, MAX_LEEWAY_SECONDS),
        frontend_urls=_frontend_urls(env, production),
        database_url=_database_url(env, instance_path),
        redis_url=_redis_url(env),
        notify_api_key=api_key,
        async_mode=async_mode,
        ping_interval=_int(env, "PING_INTERVAL", 25, 1, 3600),
        ping_timeout=_int(env, "PING_TIMEOUT", 60, 1, 3600),
        transports=_transports(env),
        max_http_buffer_size=_int(env, "MAX_HTTP_BUFFER_SIZE", 32 * 1024, 1024, 16 * 1024**2),
        token_sweep_interval=_seconds(env, "TOKEN_SWEEP_INTERVAL", 1.0, 0.05, 60),
        retention_days=_int(env, "NOTIFICATION_RETENTION_DAYS", 90, 1, 36500),
        debug_page=_flag(env, "DEBUG_PAGE", True),
        socketio_client_url=_client_url(env),
        log_level=log_level,
        socketio_logger=_flag(env, "SOCKETIO_LOGGER", False),
        **_metrics_settings(env),
        jwt_key_ids=key_ids,
        jwt_jwks_url=jwks_url,
        **_limit_settings(env),
        generated=tuple(generated),
    )


_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _secret_keys(env: Mapping[str, str]) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    """JWT_SECRET_KEY entries, each ``secret`` or ``kid:secret`` (a kid is 1-64 of
    A-Z a-z 0-9 . _ -); a secret that itself contains ':' needs a kid in front."""
    kids: list[str | None] = []
    keys: list[str] = []
    for entry in _split(env.get("JWT_SECRET_KEY")):
        kid, sep, secret = entry.partition(":")
        if sep and _KID.fullmatch(kid) and secret:
            kids.append(kid)
            keys.append(secret)
        else:
            kids.append(None)
            keys.append(entry)
    named = [k for k in kids if k]
    if len(named) != len(set(named)):
        raise ConfigError("JWT_SECRET_KEY names the same kid twice")
    return tuple(kids), tuple(keys)


def _jwks_url(env: Mapping[str, str]) -> str | None:
    url = (env.get("JWT_JWKS_URL") or "").strip()
    if not url:
        return None
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"JWT_JWKS_URL must be an http(s) URL, got {url!r}")
    return url


_RATE = re.compile(r"\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?\s*", re.I)


def _rate(env: Mapping[str, str], name: str, default: str) -> str | None:
    """A limit like "600/minute" or "100 per 10 seconds"; 0 or off means none."""
    raw = (env.get(name) or "").strip() or default
    if raw.lower() in ("0", "off", "none", "false"):
        return None
    if not _RATE.fullmatch(raw):
        raise ConfigError(f"{name} must look like 600/minute (or 0 for none), got {raw!r}")
    return raw


def _proxy_hops(env: Mapping[str, str]) -> int:
    raw = (env.get("TRUSTED_PROXIES") or "").strip()
    if not raw.isdigit():
        return 0
    hops = int(raw)
    if not 1 <= hops <= 10:
        raise ConfigError(f"TRUSTED_PROXIES as a hop count must be 1 to 10, got {hops}")
    return hops


def _networks(env: Mapping[str, str]) -> tuple[str, ...]:
    if (env.get("TRUSTED_PROXIES") or "").strip().isdigit():
        return ()  # a hop count, parsed by _proxy_hops
    nets = []
    for item in _split(env.get("TRUSTED_PROXIES")):
        try:
            nets.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"TRUSTED_PROXIES entry {item!r} is not an IP or CIDR") from None
    return tuple(nets)


def _seconds(env: Mapping[str, str], name: str, default: float, low: float,
             high: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _limit_settings(env: Mapping[str, str]) -> dict[str, object]:
    """Rate limits, connection caps, proxy trust and JWKS caching."""
    redis_url = (env.get("REDIS_URL") or "").strip()
    return {
        "jwt_jwks_cache_seconds": _int(env, "JWT_JWKS_CACHE_SECONDS", 300, 1, 86400),
        "jwt_jwks_timeout": _seconds(env, "JWT_JWKS_TIMEOUT", 5.0, 0.1, 60),
        "jwt_jwks_cooldown": _seconds(env, "JWT_JWKS_COOLDOWN", 30.0, 0, 3600),
        "rate_limit_http": _rate(env, "RATE_LIMIT_HTTP", "600/minute"),
        "rate_limit_api_key": _rate(env, "RATE_LIMIT_API_KEY", "6000/minute"),
        "rate_limit_storage_url": (env.get("RATE_LIMIT_STORAGE_URL") or "").strip()
        or redis_url or "memory://",
        "connect_rate_per_ip": _int(env, "CONNECT_RATE_PER_IP", 300, 0, 1_000_000),
        "max_sockets_per_user": _int(env, "MAX_SOCKETS_PER_USER", 20, 0, 100_000),
        "socket_event_rate": _seconds(env, "SOCKET_EVENT_RATE", 5.0, 0.01, 10_000),
        "socket_event_burst": _int(env, "SOCKET_EVENT_BURST", 20, 1, 100_000),
        "socket_flood_limit": _int(env, "SOCKET_FLOOD_LIMIT", 50, 1, 1_000_000),
        "connect_timeout": _seconds(env, "CONNECT_TIMEOUT", 10.0, 0.5, 300),
        "max_pending_sessions_per_ip": _int(env, "MAX_PENDING_SESSIONS_PER_IP", 30, 0,
                                            1_000_000),
        "socket_read_rate": _int(env, "SOCKET_READ_RATE", 32 * 1024, 1024, 1024**3),
        "trusted_proxies": _networks(env),
        "trusted_proxy_hops": _proxy_hops(env),
    }


def _metrics_settings(env: Mapping[str, str]) -> dict[str, object]:
    """GET /metrics: its optional bearer token and prometheus_client's multiprocess
    directory (which prometheus_client itself reads from the environment)."""
    directory = (env.get("PROMETHEUS_MULTIPROC_DIR") or "").strip() or None
    if directory and not Path(directory).is_dir():
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR {directory!r} is not a directory: create it "
            "(empty) before gunicorn starts, or unset it"
        )
    return {
        "metrics_token": (env.get("METRICS_TOKEN") or "").strip() or None,
        "metrics_multiproc_dir": directory,
    }
