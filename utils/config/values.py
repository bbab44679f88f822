"""One parser per kind of value an environment variable holds.

Every parser names its variable in the one-line ``ConfigError`` it raises, and
records the name, so a test can check docs/CONFIGURATION.md's table against
what the code really reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

OFF_WORDS = ("0", "false", "no", "off")
# "600/minute", "100 per 10 seconds": what the limits library parses.
_RATE = re.compile(r"\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?\s*", re.I)


class ConfigError(RuntimeError):
    """A configuration value that prevents start-up; the message is one clear line."""


class Env:
    """Reads an environment mapping, one parser per kind of value."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.read: set[str] = set()

    def raw(self, name: str) -> str:
        """The value with surrounding blanks removed; "" when unset."""
        self.read.add(name)
        return (self._env.get(name) or "").strip()

    def is_set(self, name: str) -> bool:
        self.read.add(name)
        return self._env.get(name) is not None

    def text(self, name: str, default: str | None = None) -> str | None:
        return self.raw(name) or default

    def flag(self, name: str, default: bool) -> bool:
        raw = self.raw(name)
        return default if not raw else raw.lower() not in OFF_WORDS

    def items(self, name: str, default: str = "") -> list[str]:
        """A comma-separated list, blanks dropped."""
        raw = self.raw(name) or default
        return [item.strip() for item in raw.split(",") if item.strip()]

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name).lower() or default
        if value not in choices:
            raise ConfigError(f"{name} must be {' or '.join(choices)}, got {value!r}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        return int(self._number(name, default, low, high, int, "a whole number"))

    def seconds(self, name: str, default: float, low: float, high: float) -> float:
        return float(self._number(name, default, low, high, float, "a number"))

    def rate(self, name: str, default: str) -> str | None:
        """A limit such as "600/minute" or "100 per 10 seconds"; 0 or off means none."""
        raw = self.raw(name) or default
        if raw.lower() in (*OFF_WORDS, "none"):
            return None
        if not _RATE.fullmatch(raw):
            raise ConfigError(f"{name} must look like 600/minute (or 0 for none), got {raw!r}")
        return raw

    def url(self, name: str, schemes: tuple[str, ...], secret: bool = False) -> str | None:
        """An URL with one of ``schemes``; a secret one is never echoed back."""
        url = self.raw(name)
        if url and not url.lower().startswith(schemes):
            shown = "" if secret else f", got {url!r}"
            raise ConfigError(f"{name} must start with {', '.join(schemes)}{shown}")
        return url or None

    def _number(self, name: str, default: float, low: float, high: float,
                kind: type, what: str) -> float:
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return value
