"""WSGI middleware that runs before Engine.IO sees a request."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class NoWebSocketCompression:
    """Removes Sec-WebSocket-Extensions so permessage-deflate is never negotiated.

    Safari has shipped several bugs with compressed WebSocket frames, notification
    payloads are small, and compression costs each socket tens of kilobytes of
    zlib state on the server.
    """

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return self.app(environ, start_response)
