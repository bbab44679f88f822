"""Where the server is: the URL being checked, and the URLs derived from it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

HTTP_PORT, HTTPS_PORT = 80, 443


@dataclass(frozen=True)
class Target:
    """Scheme, host, port and an optional path prefix."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        port = parts.port or (HTTPS_PORT if parts.scheme == "https" else HTTP_PORT)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = HTTPS_PORT if self.secure else HTTP_PORT
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def eio_path(self) -> str:
        return self.path + "/socket.io/"

    def url(self, path: str = "") -> str:
        return self.origin + self.path + path

    def ws_url(self, path: str = "") -> str:
        return ("wss://" if self.secure else "ws://") + self.netloc + self.path + path

    def with_scheme(self, scheme: str) -> Target:
        return Target(scheme, self.host, HTTPS_PORT if scheme == "https" else HTTP_PORT,
                      self.path)

    def moved_to(self, location: str) -> Target | None:
        """Where a redirect's Location points (same path prefix), or None if unusable."""
        try:
            landed = Target.parse(location)
        except ValueError:
            return None
        return Target(landed.scheme, landed.host, landed.port, self.path)

    def is_local(self) -> bool:
        """Loopback or private address: plain http there is a test set-up, not a leak."""
        if self.host == "localhost" or self.host.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return address.is_loopback or address.is_private


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, or "" when it is not one."""
    try:
        return Target.parse(url).origin
    except ValueError:
        return ""
