"""HTTP hygiene and limits, registered with one call from create_app()."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

# /debug loads its script and styles as files from this server and talks to the same
# origin over http(s) and ws(s); nothing inline, nothing from elsewhere, no framing.
CSP_TEMPLATE = (
    "default-src 'self'; script-src 'self'{scripts}; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"
# A Host header only ever feeds the CSP when it is a plain host[:port].
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def content_security_policy(host: object, script_origin: str | None = None) -> str:
    """The CSP for a response to ``host``: 'self' plus ws:// and wss:// of that host,
    spelled out because older Safari does not let 'self' cover WebSocket URLs.
    ``script_origin`` is where /debug loads socket.io-client from when
    SOCKETIO_CLIENT_URL points elsewhere."""
    sockets = ""
    if isinstance(host, str) and _HOST.fullmatch(host):
        sockets = f" ws://{host} wss://{host}"
    scripts = f" {script_origin}" if script_origin else ""
    return CSP_TEMPLATE.format(sockets=sockets, scripts=scripts)


def script_origin(url: str | None) -> str | None:
    """The origin of an absolute SOCKETIO_CLIENT_URL (a path on this server needs none)."""
    if not url or not url.startswith(("https://", "http://")):
        return None
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin if _HOST.fullmatch(parts.netloc) else None


class SecurityHeaders:
    """WSGI middleware: the headers go on every response, Engine.IO's included (its
    responses never pass through Flask's after_request)."""

    def __init__(self, app: Callable, production: bool, scripts: str | None = None) -> None:
        self.app = app
        self.production = production
        self.scripts = scripts

    def headers_for(self, environ: dict[str, Any]) -> list[tuple[str, str]]:
        headers = [
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy",
             content_security_policy(environ.get("HTTP_HOST"), self.scripts)),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]
        if self.production:
            headers.append(("Strict-Transport-Security", HSTS))
        return headers

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        extra = self.headers_for(environ)

        def with_headers(status: str, headers: list, exc_info: Any = None) -> Callable:
            present = {name.lower() for name, _ in headers}
            # Drop any Server header an inner layer set: the server adds its own name,
            # and no version needs to be disclosed.
            headers = [(n, v) for n, v in headers if n.lower() != "server"]
            headers.extend((n, v) for n, v in extra if n.lower() not in present)
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        return self.app(environ, with_headers)
