"""A thin WSGI guard in front of Engine.IO for input python-engineio mishandles.

What it stops, found by sending raw Engine.IO (tests/server/test_security_server.py):

- A polling POST whose packet Engine.IO cannot accept (an unknown packet type such as
  ``9``, a client ``2``/``6``, or a body over ``max_http_buffer_size``) makes
  python-engineio disconnect the session with ``close(wait=True)``, which waits on
  the outgoing queue until a GET drains it. A client that never polls again leaves
  that POST, its greenlet and its socket hanging for good: one request each pins
  a connection (python-engineio 4.15.1; the same ``queue.join()`` hang is described
  upstream in miguelgrinberg/python-engineio#60). Bodies that are not UTF-8 or do
  not parse are logged with a traceback per request. The guard answers 400/413
  itself, before Engine.IO sees such a body.
- Two long-polls at once on one session are both accepted and race for packets.
  As the reference server does (socketio/engine.io#363, and the engine.io protocol
  test suite's "closes the session upon duplicate poll requests"), the second gets
  400 and the session is closed: the first poll returns the CLOSE packet ``1``.
- A polling POST the guard refuses as malformed (below) closes its session too, as
  the protocol test suite's "closes the session upon invalid packet format" expects.
- A request naming a session Engine.IO does not hold reached Engine.IO, which answers
  ``Invalid session <sid>``, echoing whatever the client sent; before that, the guard
  had opened a read budget for that sid. 47,000 anonymous POSTs with 4,000-character
  sids left RSS 270-284 MB up for good (issue 20, findings 8 and 13). The guard now
  answers them itself, 400 ``unknown_session`` without the sid, opens nothing, and
  counts them per client address: past UNKNOWN_SESSION_RATE_PER_IP a minute, 429. A session
  closed but still listed counts as unknown: a POST for one made python-engineio
  raise ``KeyError`` out of ``_get_socket``, a 500.
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
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from utils.edge.throttle import MAX_POLL_WAIT, ByteBudget, SessionBudgets, ThrottledSocket
from utils.errors import refusal
from utils.patches.eventlet import end_taken_over_connection

# Packet types a client may send over polling (Engine.IO v4): close, pong, message
# and upgrade. Not "b", a base64 binary message: this API has no binary payloads.
CLIENT_PACKET_TYPES = frozenset("1345")
SEPARATOR = "\x1e"
# Requests for a session this process does not hold, per client address and minute,
# before they get 429 (to become a setting). A client that meets an unknown session
# opens a new one next, so this is as many as the handshakes CONNECT_RATE_PER_IP's
# default lets an address make (twice 300 a minute). Counted in this process's memory:
# whether a session is known is a fact about this process, and a flood of them must
# not cost a round trip to shared storage each.
UNKNOWN_SESSIONS_PER_MINUTE = 600
# The refusal keeps python-engineio's words, without the sid: the doctor
# (utils/doctor/probe.py) and operators recognise a split deployment by them.
UNKNOWN_SESSION = ("Invalid session: this process holds no such session (it ended, or "
                   "another process issued it); open a new one")

log = logging.getLogger(__name__)


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


def _peer(environ: dict[str, Any]) -> str:
    return str(environ.get("REMOTE_ADDR") or "unknown")


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
    """Answers requests for unknown sessions, validates polling POST bodies, and
    refuses overlapping polls and WebSockets.

    ``known_session(sid)`` says whether Engine.IO holds an open session of that id;
    ``end_session(sid)`` closes one (both from utils/edge/stack.py). ``address_of``
    names the client address per-address limits count against."""

    def __init__(self, app: Callable, max_buffer: int, *,
                 known_session: Callable[[str], bool],
                 end_session: Callable[[str], None],
                 path: str = "/socket.io",
                 allow_handshake: Callable[[dict[str, Any]], bool] | None = None,
                 address_of: Callable[[dict[str, Any]], str] = _peer,
                 unknown_per_minute: int = UNKNOWN_SESSIONS_PER_MINUTE,
                 read_rate: int | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.app = app
        self.max_buffer = max_buffer
        self.known_session = known_session
        self.end_session = end_session
        self.path = path
        self.allow_handshake = allow_handshake
        self.address_of = address_of
        self.read_rate = read_rate
        # A budget holds two of the largest messages, so one never waits alone.
        self.read_burst = 2 * max_buffer
        self.sleep = sleep
        self.poll_budgets = (SessionBudgets(read_rate, self.read_burst, alive=known_session)
                             if read_rate else None)
        self._unknown_limit = (parse_limit(f"{unknown_per_minute}/minute")
                               if unknown_per_minute else None)
        self._unknown_window = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._busy: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if not str(environ.get("PATH_INFO", "")).startswith(self.path):
            return self.app(environ, start_response)
        try:
            query = parse_qs(str(environ.get("QUERY_STRING", "")), max_num_fields=20)
        except ValueError:
            return refusal(start_response, "400 Bad Request", "bad_request",
                           "too many query arguments")
        sid = (query.get("sid") or [None])[0]
        method = environ.get("REQUEST_METHOD")
        if method == "POST" or (method == "GET" and sid is not None):
            # Before anything is read or kept for it: a sid Engine.IO does not hold
            # costs one counter per address, whatever the client made up.
            if sid is None or not self.known_session(sid):
                return self._unknown_session(environ, start_response)
        upgrade = is_websocket(environ)
        if sid is None and method == "GET" and self.allow_handshake is not None \
                and not self.allow_handshake(environ):
            return refusal(start_response, "429 Too Many Requests", "rate_limited",
                           "too many new connections from this address; retry later",
                           [("Retry-After", "60")])
        if method == "GET" and upgrade:
            if self.read_rate:
                budget = ByteBudget(self.read_rate, self.read_burst, time.monotonic())
                _throttle_socket(environ, budget, self.sleep)
            return self._websocket(sid, environ, start_response)
        if method == "POST":
            return self._post(sid, environ, start_response)
        if method == "GET" and sid is not None:
            # A poll that asks for the polling transport is a client's; one that names
            # websocket is an upgrade whose headers a proxy dropped, and only refused.
            polling = (query.get("transport") or ["polling"])[0] == "polling"
            return self._exclusive(sid, "poll", environ, start_response, ends=polling)
        return self.app(environ, start_response)

    def _unknown_session(self, environ: dict[str, Any],
                         start_response: Callable) -> Iterable[bytes]:
        """400 for a session this process does not hold; 429 once the address has
        asked for too many of them this minute."""
        if self._unknown_limit is not None and not self._unknown_window.hit(
                self._unknown_limit, "unknown-session", self.address_of(environ)):
            return refusal(start_response, "429 Too Many Requests", "rate_limited",
                           "too many requests for unknown sessions from this address; "
                           "retry later", [("Retry-After", "60")])
        return refusal(start_response, "400 Bad Request", "unknown_session", UNKNOWN_SESSION)

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
        body = self._read_packets(environ)
        if isinstance(body, tuple):
            status, code, message = body
            self._end(sid, f"a malformed polling POST ({code})")
            return refusal(start_response, status, code, f"{message}; the session is closed")
        if self.poll_budgets is not None:
            wait = self.poll_budgets.charge(sid, len(body))
            if wait > MAX_POLL_WAIT:
                return refusal(start_response, "429 Too Many Requests", "rate_limited",
                               "this session sends too much data; slow down",
                               [("Retry-After", str(int(wait) + 1))])
            if wait > 0:
                self.sleep(wait)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        try:
            return self.app(environ, start_response)
        finally:
            # A CLOSE packet, or a message Socket.IO refused, may have ended it.
            if self.poll_budgets is not None and not self.known_session(sid):
                self.poll_budgets.forget(sid)

    def _read_packets(self, environ: dict[str, Any]) -> bytes | tuple[str, str, str]:
        """The body of a polling POST, or (status, code, message) if it is malformed."""
        raw_length = environ.get("CONTENT_LENGTH") or ""
        try:
            length = int(raw_length) if raw_length else None
        except ValueError:
            return "400 Bad Request", "bad_request", "Content-Length is not a number"
        too_large = ("413 Request Entity Too Large", "payload_too_large",
                     "the packet is larger than the server accepts")
        if length is not None and (length < 0 or length > self.max_buffer):
            return too_large
        body = environ["wsgi.input"].read(length if length is not None else self.max_buffer + 1)
        if len(body) > self.max_buffer:
            return too_large
        problem = payload_problem(body)
        if problem:
            return "400 Bad Request", "bad_packet", problem
        return body

    def _exclusive(self, sid: str, kind: str, environ: dict[str, Any],
                   start_response: Callable, ends: bool = False) -> Iterable[bytes]:
        """One long-poll and one WebSocket at a time per session. Engine.IO handles a
        poll, and a whole WebSocket, within the call, so the call marks it busy. A
        second request of the kind is refused; with ``ends``, the session is closed."""
        key = (sid, kind)
        with self._lock:
            if key in self._busy:
                overlap = True
            else:
                overlap = False
                self._busy.add(key)
        if overlap:
            what = "WebSocket" if kind == "websocket" else "long-poll"
            message = f"this session already has a {what} open"
            if ends:
                self._end(sid, f"a second {what} at once")
                message += "; the session is closed"
            return refusal(start_response, "400 Bad Request", "transport_overlap", message)
        try:
            return self.app(environ, start_response)
        finally:
            with self._lock:
                self._busy.discard(key)

    def _end(self, sid: str, why: str) -> None:
        """Close a session that broke the protocol: a long-poll it has open returns
        the CLOSE packet, and any later request for it is an unknown session."""
        log.warning("closed an Engine.IO session: %s", why)
        self.end_session(sid)
        if self.poll_budgets is not None:
            self.poll_budgets.forget(sid)
