"""Which browser origins may open sockets and read the HTTP API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, request

CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


class OriginPolicy:
    """Allows the exact FRONTEND_URLS plus the server's own origin (the /debug page).

    Engine.IO calls it for polling and WebSocket requests alike, so a foreign page
    can neither long-poll nor open a WebSocket as a user (cross-site WebSocket
    hijacking). A request without an Origin header is not from a browser page.
    """

    def __init__(self, frontend_urls: Iterable[str]) -> None:
        self.allowed = frozenset(frontend_urls)

    def __call__(self, origin: str | None, environ: Mapping[str, Any] | None = None) -> bool:
        if not origin:
            return False
        if origin in self.allowed:
            return True
        return environ is not None and self.same_origin(origin, environ)

    @staticmethod
    def same_origin(origin: str, environ: Mapping[str, Any]) -> bool:
        host = environ.get("HTTP_HOST")
        if not host:
            return False
        try:
            return urlsplit(origin).netloc.lower() == str(host).lower()
        except ValueError:
            return False


def register_cors(app: Flask, policy: OriginPolicy) -> None:
    """CORS with credentials for /api/*, for allowed origins only."""

    @app.after_request
    def _cors(response):
        origin = request.headers.get("Origin")
        if not request.path.startswith("/api/") or not origin:
            return response
        response.vary.add("Origin")
        if not policy(origin, request.environ):
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        return response
