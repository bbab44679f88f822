"""Logging to stdout, configured once, with tokens and keys redacted from every line."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable

# A JWT anywhere (header.payload.signature, base64url), a token= query value, a
# Bearer credential, and any "token" key in JSON (Engine.IO packet logs).
_PATTERNS = [
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"(?i)(token=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(\"token\"\s*:\s*\")[^\"]*"), r"\1[redacted]"),
]


class RedactingFilter(logging.Filter):
    """Rewrites a record's message so no secret can reach any handler."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 8]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        redacted = self.redact(message)
        if record.exc_info:
            # Render the traceback now so it is redacted too.
            formatter = logging.Formatter()
            redacted += "\n" + self.redact(formatter.formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = redacted, None
        return True


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Lines one connection can cause, as many times as a client likes (issue 24: 30 in
# 8 s during a Schemathesis run): at most PER_CONNECTION_BURST of each in a window.
PER_CONNECTION = frozenset({
    "closed an Engine.IO session: %s",
    "closed a WebSocket after a bad frame (%s)",
    "socket flood: closing %s",
})
PER_CONNECTION_BURST = 10
PER_CONNECTION_WINDOW = 60.0


class PerConnectionLimit(logging.Filter):
    """Lets through at most ``burst`` records of each per-connection message in a
    ``window`` of seconds and drops the rest; the first one let through after a
    window with drops says how many were dropped. Every other record passes."""

    def __init__(self, burst: int = PER_CONNECTION_BURST,
                 window: float = PER_CONNECTION_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._lock = threading.Lock()
        self._windows: dict[str, list[float | int]] = {}  # message -> [start, let, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in PER_CONNECTION:
            return True
        now = self.clock()
        with self._lock:
            started, let, dropped = self._windows.get(record.msg, (now, 0, 0))
            if now - started >= self.window:
                started, let = now, 0
            if let >= self.burst:
                self._windows[record.msg] = [started, let, dropped + 1]
                return False
            self._windows[record.msg] = [started, let + 1, 0]
        if dropped:
            record.msg = (f"{record.msg} (and {int(dropped)} more like it not logged: at "
                          f"most {self.burst} a {self.window:.0f} s)")
        return True


def configure_logging(level: str, secrets: Iterable[str]) -> RedactingFilter:
    """One stdout handler on the root logger; gunicorn's handlers get the filter too."""
    redactor = RedactingFilter(secrets)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_notifier", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler._notifier = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
        handler.removeFilter(old)
    handler.addFilter(redactor)
    if not any(isinstance(f, PerConnectionLimit) for f in handler.filters):
        # First: it matches a record by its message template, before redaction
        # renders the message.
        handler.filters.insert(0, PerConnectionLimit())
    root.setLevel(level)
    # urllib3 logs each request's path at DEBUG; a push endpoint's path is the secret
    # that lets anyone push to that browser (utils/push/sender.py logs origins only).
    logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)
    for name in ("gunicorn.error", "gunicorn.access"):
        for gunicorn_handler in logging.getLogger(name).handlers:
            for old in [f for f in gunicorn_handler.filters if isinstance(f, RedactingFilter)]:
                gunicorn_handler.removeFilter(old)
            gunicorn_handler.addFilter(redactor)
    return redactor


# python-engineio logs at ERROR, once a process, refusals that are the client's doing
# on a healthy server: an Origin not on the list (the doctor's foreign-origin check
# sends one on purpose) and a polling request to a WebSocket-only server.
CLIENT_REFUSALS = ("is not an accepted origin", "Invalid transport")


class ClientRefusalLevel(logging.Filter):
    """python-engineio's refusals of clients' requests at WARNING, not ERROR: an
    ERROR line means the server has a problem (issue 24: a doctor run on a healthy
    server logged one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and any(
                words in record.getMessage() for words in CLIENT_REFUSALS):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def socketio_loggers(enabled: bool) -> tuple[logging.Logger, logging.Logger]:
    """The Socket.IO and Engine.IO loggers, at INFO when asked for and ERROR otherwise.

    Always Logger objects, never False: given a bool, python-socketio and
    python-engineio attach a StreamHandler of their own to these loggers, and
    their lines would bypass the redacting handler. Here they have no handler of
    their own and propagate to the root handler like every other line."""
    level = logging.INFO if enabled else logging.ERROR
    loggers = logging.getLogger("socketio.server"), logging.getLogger("engineio.server")
    for logger in loggers:
        logger.setLevel(level)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    engineio = loggers[1]
    for old in [f for f in engineio.filters if isinstance(f, ClientRefusalLevel)]:
        engineio.removeFilter(old)
    engineio.addFilter(ClientRefusalLevel())
    return loggers
