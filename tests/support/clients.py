"""A python-socketio client that records every event, for real-server tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import socketio
from engineio.payload import Payload

# python-engineio's client refuses a polling response of more than 16 packets by
# default (a guard against abuse); a replay of up to 100 notifications plus the
# welcome arrives in one response, as it does for socket.io-client, which has no
# such limit. Python clients of this service need the same setting.
Payload.max_decode_packets = 256

ORIGIN = "http://localhost:3000"


class Recorder:
    """A real Socket.IO client; ``events`` lists (name, data) in arrival order."""

    def __init__(self, origin: str | None = ORIGIN, reconnection: bool = False) -> None:
        # websocket-client adds its own Origin header unless told not to; ours is the
        # one a browser on ``origin`` would send, on polling and websocket alike.
        self.client = socketio.Client(reconnection=reconnection,
                                      websocket_extra_options={"suppress_origin": True})
        self.origin = origin
        self.events: list[tuple[str, Any]] = []
        self.connect_error: Any = None
        self._changed = threading.Condition()
        self.client.on("*", self._record)
        self.client.on("connect_error", self._on_connect_error)

    def _record(self, event: str, *args: Any) -> None:
        with self._changed:
            self.events.append((event, args[0] if args else None))
            self._changed.notify_all()

    def _on_connect_error(self, data: Any = None) -> None:
        with self._changed:
            self.connect_error = data
            self._changed.notify_all()

    def connect(self, url: str, auth: dict | None = None, transports: list[str] | None = None,
                headers: dict | None = None, query: str = "", timeout: float = 10) -> Recorder:
        all_headers = dict(headers or {})
        if self.origin:
            all_headers["Origin"] = self.origin
        self.client.connect(url + (f"?{query}" if query else ""), headers=all_headers,
                            auth=auth, transports=transports or ["polling", "websocket"],
                            wait_timeout=timeout)
        return self

    def of(self, name: str) -> list[Any]:
        with self._changed:
            return [data for event, data in self.events if event == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 10) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len([1 for event, _ in self.events if event == name]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"waited {timeout}s for {count} {name!r}; got {self.events!r}")
                self._changed.wait(remaining)
            return [data for event, data in self.events if event == name]

    @property
    def transport(self) -> str:
        return self.client.transport()

    def disconnect(self) -> None:
        if self.client.connected:
            self.client.disconnect()
        # Stop the background threads even after a failed connect.
        try:
            self.client.eio.disconnect(abort=True)
        except Exception:
            pass
