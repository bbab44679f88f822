"""A thin WSGI guard in front of Engine.IO for input python-engineio mishandles.

What it stops, found by sending raw Engine.IO (tests/test_security_server.py):

- A polling POST whose packet Engine.IO cannot accept (an unknown packet type such as
  ``9``, a client ``2``/``6``, or a body over ``max_http_buffer_size``) makes
  python-engineio disconnect the session with ``close(wait=True)``, which waits on
  the outgoing queue until a GET drains it. A client that never polls again leaves
  that POST, its greenlet and its socket hanging for good: one request each pins
  a connection (python-engineio 4.15.1; the same ``queue.join()`` hang is described
  upstream in miguelgrinberg/python-engineio#60). Bodies that are not UTF-8 or do
  not parse are logged with a traceback per request. The guard answers 400/413
  itself, before Engine.IO sees such a body.
- Two long-polls at once on one session are both accepted and race for packets;
  the reference server answers the overlap with 400 (socketio/engine.io#363).
- A second WebSocket for a session still upgrading is accepted too, so two
  transports feed one session. The guard refuses the second with 400.
- New Engine.IO sessions are not limited by Engine.IO at all; the guard caps
  handshakes per client address (twice CONNECT_RATE_PER_IP a minute, and
  MAX_PENDING_SESSIONS_PER_IP not yet signed in: utils/realtime/admission.py) with a 429.
- Nothing bounds how fast one connection may feed the worker bytes. The guard
  charges what each WebSocket reads, and each polling POST, to a budget of
  SOCKET_READ_RATE bytes a second (utils/edge/throttle.py).
- A WebSocket frame that is not an Engine.IO packet (``garbage``) raises out of
  python-engineio's WebSocket handler after the 101, and gunicorn writes an HTTP 500
  page into the WebSocket stream. The guard closes the connection instead.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from utils.edge.errors import error_body
from utils.edge.throttle import MAX_POLL_WAIT, ByteBudget, SessionBudgets, ThrottledSocket
from utils.patches import end_taken_over_connection

# Packet types a client may send over polling (Engine.IO v4): close, pong, message
# and upgrade. Not "b", a base64 binary message: this API has no binary payloads.
CLIENT_PACKET_TYPES = frozenset("1345")
SEPARATOR = "\x1e"

log = logging.getLogger(__name__)


def _refuse(start_response: Callable, status: str, code: str, message: str,
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = json.dumps(error_body(code, message)).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))), *(headers or [])])
    return [body]


def payload_problem(body: bytes) -> str | None:
    """Why a polling POST body is unacceptable, or None if Engine.IO may have it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    if not text:
        return None
    for packet in text.split(SEPARATOR):
        if not packet or packet[0] not in CLIENT_PACKET_TYPES:
            return "the body holds a packet type a client may not send"
    return None


def is_websocket(environ: dict[str, Any]) -> bool:
    """Whether Engine.IO will take this request as a WebSocket upgrade: the same test
    python-engineio's ``Socket.handle_get_request`` makes (both headers)."""
    connection = str(environ.get("HTTP_CONNECTION", "")).lower()
    return (str(environ.get("HTTP_UPGRADE", "")).lower() == "websocket"
            and "upgrade" in (token.strip() for token in connection.split(",")))


def _throttle_socket(environ: dict[str, Any], budget: ByteBudget,
                     sleep: Callable[[float], None]) -> None:
    """Route the connection's reads through a ThrottledSocket: gunicorn's workers
    hand the socket over as ``gunicorn.socket``, eventlet's own server inside
    ``eventlet.input``."""
    if "gunicorn.socket" in environ:
        environ["gunicorn.socket"] = ThrottledSocket(environ["gunicorn.socket"], budget, sleep)
    elif "eventlet.input" in environ:
        environ["eventlet.input"] = _ThrottledInput(environ["eventlet.input"], budget, sleep)


class _ThrottledInput:
    def __init__(self, wrapped: Any, budget: ByteBudget, sleep: Callable[[float], None]):
        self._wrapped = wrapped
        self._socket = ThrottledSocket(wrapped.get_socket(), budget, sleep)

    def get_socket(self) -> ThrottledSocket:
        return self._socket

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class EngineIOGuard:
    """Validates polling POST bodies and refuses overlapping polls and WebSockets."""

    def __init__(self, app: Callable, max_buffer: int, path: str = "/socket.io",
                 allow_handshake: Callable[[dict[str, Any]], bool] | None = None,
                 read_rate: int | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.app = app
        self.max_buffer = max_buffer
        self.path = path
        self.allow_handshake = allow_handshake
        self.read_rate = read_rate
        # A budget holds two of the largest messages, so one never waits alone.
        self.read_burst = 2 * max_buffer
        self.sleep = sleep
        self.poll_budgets = (SessionBudgets(read_rate, self.read_burst) if read_rate
                             else None)
        self._busy: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if not str(environ.get("PATH_INFO", "")).startswith(self.path):
            return self.app(environ, start_response)
        try:
            query = parse_qs(str(environ.get("QUERY_STRING", "")), max_num_fields=20)
        except ValueError:
            return _refuse(start_response, "400 Bad Request", "bad_request",
                           "too many query arguments")
        sid = (query.get("sid") or [None])[0]
        method = environ.get("REQUEST_METHOD")
        upgrade = is_websocket(environ)
        if sid is None and method == "GET" and self.allow_handshake is not None \
                and not self.allow_handshake(environ):
            return _refuse(start_response, "429 Too Many Requests", "rate_limited",
                           "too many new connections from this address; retry later",
                           [("Retry-After", "60")])
        if method == "GET" and upgrade:
            if self.read_rate:
                budget = ByteBudget(self.read_rate, self.read_burst, time.monotonic())
                _throttle_socket(environ, budget, self.sleep)
            return self._websocket(sid, environ, start_response)
        if sid is None:
            return self.app(environ, start_response)
        if method == "POST":
            return self._post(sid, environ, start_response)
        if method == "GET":
            return self._exclusive(sid, "poll", environ, start_response)
        return self.app(environ, start_response)

    def _websocket(self, sid: str | None, environ: dict[str, Any],
                   start_response: Callable) -> Iterable[bytes]:
        """A frame Engine.IO cannot decode makes its WebSocket handler raise after the
        101 was sent; gunicorn then writes an HTTP 500 page into the WebSocket stream.
        Under gunicorn (eventlet or gevent) the guard ends the connection quietly."""
        try:
            if sid is None:
                return self.app(environ, start_response)
            return self._exclusive(sid, "websocket", environ, start_response)
        except (StopIteration, ConnectionError):
            raise  # simple-websocket's own "the socket is done" signals
        except Exception as exc:
            log.warning("closed a WebSocket after a bad frame (%s)", type(exc).__name__)
            handled = end_taken_over_connection(environ)
            if handled is None:
                raise
            return handled

    def _post(self, sid: str, environ: dict[str, Any],
              start_response: Callable) -> Iterable[bytes]:
        raw_length = environ.get("CONTENT_LENGTH") or ""
        try:
            length = int(raw_length) if raw_length else None
        except ValueError:
            return _refuse(start_response, "400 Bad Request", "bad_request",
                           "Content-Length is not a number")
        if length is not None and (length < 0 or length > self.max_buffer):
            return _refuse(start_response, "413 Request Entity Too Large",
                           "payload_too_large", "the packet is larger than the server accepts")
        body = environ["wsgi.input"].read(length if length is not None else self.max_buffer + 1)
        if len(body) > self.max_buffer:
            return _refuse(start_response, "413 Request Entity Too Large",
                           "payload_too_large", "the packet is larger than the server accepts")
        problem = payload_problem(body)
        if problem:
            return _refuse(start_response, "400 Bad Request", "bad_packet", problem)
        if self.poll_budgets is not None:
            wait = self.poll_budgets.charge(sid, len(body))
            if wait > MAX_POLL_WAIT:
                return _refuse(start_response, "429 Too Many Requests", "rate_limited",
                               "this session sends too much data; slow down",
                               [("Retry-After", str(int(wait) + 1))])
            if wait > 0:
                self.sleep(wait)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def _exclusive(self, sid: str, kind: str, environ: dict[str, Any],
                   start_response: Callable) -> Iterable[bytes]:
        """One long-poll and one WebSocket at a time per session. Engine.IO handles a
        poll, and a whole WebSocket, within the call, so the call marks it busy."""
        key = (sid, kind)
        with self._lock:
            if key in self._busy:
                overlap = True
            else:
                overlap = False
                self._busy.add(key)
        if overlap:
            what = "WebSocket" if kind == "websocket" else "long-poll"
            return _refuse(start_response, "400 Bad Request", "transport_overlap",
                           f"this session already has a {what} open")
        try:
            return self.app(environ, start_response)
        finally:
            with self._lock:
                self._busy.discard(key)
