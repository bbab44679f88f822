"""A fake Transport for the doctor's unit tests: a server that answers the way the
real one did, without a network.

The answers were recorded by running the doctor, through a recording transport,
against gunicorn eventlet serving app:app (python-engineio 4), gunicorn's sync
worker with ASYNC_MODE=threading, the stock Flask-SocketIO app, nginx without
the upgrade headers, two nodes behind HAProxy (round-robin and sticky), and
app:app with SOCKETIO_TRANSPORTS=websocket. Each attribute of ``RecordedServer``
changes one answer; the defaults are the healthy production server.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from utils.doctor.target import Target
from utils.doctor.transport import (
    Background,
    ProbeError,
    ProbeTimeout,
    Reply,
    TransportClosed,
    WsRefused,
)

# -- answers recorded from the real servers ------------------------------------------

GUNICORN = {"server": "gunicorn"}
NGINX = {"server": "nginx/1.22.1"}
POLLING_TEXT = {"content-type": "text/plain; charset=UTF-8"}
PLAIN_TEXT = {"content-type": "text/plain"}
JSON_TYPE = {"content-type": "application/json"}
CREDENTIALS = {"access-control-allow-credentials": "true"}

OPEN_INFO = {"upgrades": ["websocket"], "pingTimeout": 60000, "pingInterval": 25000,
             "maxPayload": 32768}
HEALTHZ = {"async_mode": "eventlet", "environment": "production",
           "message_queue": "disabled", "monkey_patched": True, "ping_interval": 25,
           "ping_timeout": 60, "status": "ok", "transports": ["polling", "websocket"],
           "version": "0.1.0"}
HEALTHZ_THREADING = {**HEALTHZ, "async_mode": "threading", "monkey_patched": False}
HEALTHZ_WEBSOCKET_ONLY = {**HEALTHZ, "message_queue": "redis", "transports": ["websocket"]}
STOCK_NOT_FOUND = ('<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n'
                   '<h1>Not Found</h1>\n<p>The requested URL was not found on the server. If '
                   'you entered the URL manually please check your spelling and try again.'
                   '</p>\n')

AUTH_SUCCESS = '42["auth_success",{"user_id":"alice","unread_count":0}]'
SYNC_COMPLETE = '42["sync_complete",{"last_id":null,"replayed":0,"has_more":false,"gap":false}]'
NOTIFICATION = ('42["notification",{"id":1,"type":"doctor","title":"doctor: round-trip '
                'check","body":null,"data":{"doctor":"%s"},"created_at":'
                '"2026-11-30T02:05:09.764Z","read_at":null}]')
MARK_READ_ACK = '431[{"updated":1,"unread_count":0}]'
PROBE_PONG = "3probe"

OK_BODY = "OK"
INVALID_SESSION = '"Invalid session %s"'
NOT_ACCEPTED_ORIGIN = '"Not an accepted origin."'
INVALID_TRANSPORT = '"Invalid transport"'  # any polling request, SOCKETIO_TRANSPORTS=websocket
INVALID_UPGRADE = '"Invalid websocket upgrade"'
TRANSPORT_OVERLAP = ('{"error": {"code": "transport_overlap", "message": "this session already '
                     'has a long-poll open"}}')
RATE_LIMITED = ('{"error": {"code": "rate_limited", "message": "this session sends too much '
                'data; slow down"}}')
CREATED = '{"notifications":[{"id":1,"user_id":"alice"}]}\n'
API_KEY_INVALID = '{"error": {"code": "api_key_invalid", "message": "the API key is not valid"}}'
STICKY_COOKIE = "SERVERID=node1; path=/; HttpOnly"
PUSH_CONFIG = ('{"enabled":true,"vapid_public_key":"BAQ2gvav_cPJmBMJcVR6DTY5Zd0erpjbalf4q782-'
               'gAw4XjN6qvPYGFFj_CQtgXN3WypBuTFweLIKAd82fejoyI"}\n')

REASONS = {101: "Switching Protocols", 200: "OK", 201: "CREATED", 400: "BAD REQUEST",
           403: "FORBIDDEN", 404: "NOT FOUND", 429: "TOO MANY REQUESTS"}
ELAPSED = 0.004  # seconds: what a local answer takes


def reply(status: int, body: str = "", headers: dict[str, str] | None = None,
          elapsed: float = ELAPSED) -> Reply:
    return Reply(status, REASONS.get(status, ""), {**GUNICORN, **(headers or {})},
                 body.encode(), elapsed)


def compact(data: Any) -> str:
    """JSON the way python-socketio writes it."""
    return json.dumps(data, separators=(",", ":"))


def connected(sid: str) -> str:
    return "40" + compact({"sid": sid})


def refused(code: str) -> str:
    return "44" + compact({"message": "unauthorized", "data": {"code": code}})


def healthz(body: dict[str, Any] = HEALTHZ, elapsed: float = ELAPSED) -> Reply:
    return reply(200, json.dumps(body), JSON_TYPE, elapsed)


def nginx_refusal(body: str = INVALID_UPGRADE) -> Reply:
    return Reply(400, "Bad Request", {**NGINX, **PLAIN_TEXT}, body.encode(), ELAPSED)


def contract_connect(auth: dict[str, Any] | None, headers: dict[str, str]) -> list[str]:
    """This backend: a token in the auth payload signs in, anything else is refused."""
    if auth and auth.get("token"):
        return [AUTH_SUCCESS, SYNC_COMPLETE, connected("socket-sid")]
    return [refused("token_missing")]


def stock_connect(auth: dict[str, Any] | None, headers: dict[str, str]) -> list[str]:
    """A stock Flask-SocketIO app: every connect is accepted."""
    return [connected("socket-sid")]


# -- the fake server ----------------------------------------------------------------


@dataclass
class Session:
    """An Engine.IO session: what the server will send it, and who signed in on it."""

    sid: str
    number: int
    queue: list[str] = field(default_factory=list)
    user: str | None = None
    closed: bool = False
    upgraded: bool = False  # a WebSocket took over: long-polls end with a NOOP


class RecordedServer:
    """The Transport protocol, answered like the recorded servers."""

    def __init__(self) -> None:
        self.open_info: dict[str, Any] = dict(OPEN_INFO)
        self.transports: tuple[str, ...] = ("polling", "websocket")  # what Engine.IO serves
        self.handshake_error: ProbeError | None = None  # raised by every handshake GET
        self.handshake_status: int = 200
        self.healthz: Reply | ProbeError = healthz()
        self.push_config: Reply | ProbeError = reply(200, PUSH_CONFIG, JSON_TYPE)
        self.allowed_origins = {"http://localhost:3000"}
        self.websocket_origins: set[str] | None = None  # None: the same as polling
        self.echo_every_origin = False
        self.credentials = True
        self.set_cookie = ""
        # Session number -> True when its requests reach a process that never heard of it.
        self.split: Callable[[int], bool] = lambda number: False
        self.sticky = False  # a request carrying the handshake's cookie reaches its issuer
        self.refuse_polls: Callable[[int], Reply | None] = lambda number: None
        self.connect_answer = contract_connect
        self.websocket_refusal: Reply | None = None
        self.upgrade_refusal: Reply | None = None
        self.extensions = ""
        self.one_at_a_time = False  # the sync worker: a held request stalls the rest
        self.plain_post: Reply = reply(400, INVALID_SESSION % "None", {**PLAIN_TEXT,
                                                                      **CREDENTIALS})
        self.redirects: dict[str, Reply] = {}  # origin -> its answer to every request
        self.certificate: float | None | ProbeError = None
        self.tcp_open = True
        self.notification_reply: Reply = reply(201, CREATED, JSON_TYPE)
        self.deliver_over = {"polling", "websocket"}
        self.sessions: dict[str, Session] = {}
        self.websockets: list[FakeWebSocket] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._numbers = itertools.count()
        self._held = 0  # long-polls and WebSockets holding the (one) worker
        self.changed = threading.Condition()

    def serve_websocket_only(self, healthz_lists_it: bool = True) -> RecordedServer:
        """SOCKETIO_TRANSPORTS=websocket; ``healthz_lists_it=False``: a /healthz that does
        not say (another app, an older version)."""
        self.transports = ("websocket",)
        if healthz_lists_it:
            self.healthz = healthz(HEALTHZ_WEBSOCKET_ONLY)
        return self

    def polling_requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request sent for the polling transport."""
        return [(method, path) for method, path, _headers in self.requests
                if parse_qs(urlsplit(path).query).get("transport") == ["polling"]]

    # -- the Transport protocol ---------------------------------------------------------

    def request(self, target: Target, method: str, path: str,
                headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 5.0) -> Reply:
        headers = headers or {}
        self.requests.append((method, path, headers))
        if target.origin in self.redirects:
            return self.redirects[target.origin]
        if self.one_at_a_time and self._held:
            raise ProbeTimeout(f"{method} {path}: no answer within {timeout:g} s")
        route = urlsplit(path).path
        if route.endswith("/healthz"):
            if isinstance(self.healthz, ProbeError):
                raise self.healthz
            return self.healthz
        if route.endswith("/api/push/config"):
            if isinstance(self.push_config, ProbeError):
                raise self.push_config
            return self.push_config
        if route.endswith("/api/notifications"):
            return self._notify(headers, body or b"")
        sid = parse_qs(urlsplit(path).query).get("sid", [None])[0]
        if method == "POST" and sid not in self.sessions:
            return self.plain_post  # the guard answers unknown sessions before Engine.IO
        if "polling" not in self.transports:
            return self._polling_refused(headers)
        if sid is None:
            return self._handshake(headers)
        session = self._reachable(sid, headers)
        if isinstance(session, Reply):
            return session
        if method == "POST":
            return self._receive(session, (body or b"").decode(), headers)
        return self._long_poll(session, headers, timeout)

    def start_request(self, target: Target, method: str, path: str,
                      headers: dict[str, str] | None = None, timeout: float = 5.0) -> FakePending:
        return FakePending(lambda: self.request(target, method, path, headers, None, timeout))

    def open_websocket(self, target: Target, path: str, headers: dict[str, str],
                       timeout: float) -> FakeWebSocket:
        self.requests.append(("WEBSOCKET", path, headers))
        if target.origin in self.redirects:  # a front answers the upgrade request so too
            raise WsRefused(self.redirects[target.origin])
        if self.one_at_a_time and self._held:
            raise ProbeTimeout(f"no answer to the WebSocket request within {timeout:g} s")
        origin = headers.get("Origin")
        allowed = self.allowed_origins if self.websocket_origins is None \
            else self.websocket_origins
        if origin and origin not in allowed and not self.echo_every_origin:
            raise WsRefused(reply(400, NOT_ACCEPTED_ORIGIN, PLAIN_TEXT))
        if self.websocket_refusal:
            raise WsRefused(self.websocket_refusal)
        sid = parse_qs(urlsplit(path).query).get("sid", [None])[0]
        if sid is None:
            session = self._new_session()
            session.queue.append("0" + json.dumps({"sid": session.sid, **self.open_info,
                                                   "upgrades": []}))
        else:
            found = self._reachable(sid, headers)
            if isinstance(found, Reply):
                raise WsRefused(found)
            if self.upgrade_refusal:
                raise WsRefused(self.upgrade_refusal)
            session = found
        ws = FakeWebSocket(self, session)
        self.websockets.append(ws)
        return ws

    def tcp_accepts(self, target: Target, timeout: float) -> bool:
        return self.tcp_open

    def certificate_expiry(self, target: Target, timeout: float) -> float | None:
        if isinstance(self.certificate, ProbeError):
            raise self.certificate
        return self.certificate

    # -- Engine.IO, as python-engineio answers it ------------------------------------

    def _new_session(self) -> Session:
        number = next(self._numbers)
        session = Session(f"sid-{number:04d}-recorded", number)
        self.sessions[session.sid] = session
        return session

    def _handshake(self, headers: dict[str, str]) -> Reply:
        if self.handshake_error:
            raise self.handshake_error
        origin = headers.get("Origin")
        if origin and origin not in self.allowed_origins and not self.echo_every_origin:
            return reply(400, NOT_ACCEPTED_ORIGIN, PLAIN_TEXT)
        if self.handshake_status != 200:
            return reply(self.handshake_status, "", PLAIN_TEXT)
        answer = {**POLLING_TEXT, **(CREDENTIALS if self.credentials else {})}
        if origin:
            answer["access-control-allow-origin"] = origin
        if self.set_cookie:
            answer["set-cookie"] = self.set_cookie
        session = self._new_session()
        return reply(200, "0" + json.dumps({"sid": session.sid, **self.open_info}), answer)

    def _polling_refused(self, headers: dict[str, str]) -> Reply:
        """python-engineio checks the origin, then the transport."""
        origin = headers.get("Origin")
        if origin and origin not in self.allowed_origins and not self.echo_every_origin:
            return reply(400, NOT_ACCEPTED_ORIGIN, PLAIN_TEXT)
        return reply(400, INVALID_TRANSPORT, PLAIN_TEXT)

    def _reachable(self, sid: str, headers: dict[str, str]) -> Session | Reply:
        """The session, or the answer of a process that does not hold it."""
        session = self.sessions.get(sid)
        carries_cookie = self.sticky and self.set_cookie.split(";")[0] in headers.get(
            "Cookie", "")
        if session is None or (self.split(session.number) and not carries_cookie):
            return reply(400, INVALID_SESSION % sid, {**PLAIN_TEXT, **CREDENTIALS})
        return self.refuse_polls(session.number) or session

    def _receive(self, session: Session, body: str, headers: dict[str, str]) -> Reply:
        for packet in body.split("\x1e"):
            self.handle(session, packet, headers)
        return reply(200, OK_BODY, PLAIN_TEXT)

    def handle(self, session: Session, packet: str, headers: dict[str, str]) -> None:
        """One packet from the client, over either transport."""
        with self.changed:
            if packet == "1":
                session.closed = True
            elif packet.startswith("40"):
                auth = json.loads(packet[2:]) if len(packet) > 2 else None
                answer = self.connect_answer(auth, headers)
                if any(p.startswith("40") for p in answer):
                    session.user = "alice"
                session.queue.extend(answer)
            elif packet == "2probe":
                session.upgraded = True
                session.queue.append(PROBE_PONG)
            elif packet.startswith("421"):
                session.queue.append(MARK_READ_ACK)
            self.changed.notify_all()

    def _long_poll(self, session: Session, headers: dict[str, str], timeout: float) -> Reply:
        deadline = time.monotonic() + timeout
        with self.changed:
            self._held += 1
            try:
                while not (session.queue or session.closed or session.upgraded):
                    if not self.changed.wait(deadline - time.monotonic()):
                        raise ProbeTimeout(f"long-poll: no answer within {timeout:g} s")
            finally:
                self._held -= 1
            if session.upgraded:
                return reply(200, "6", POLLING_TEXT)
            packets, session.queue = session.queue or ["6"], []
        return reply(200, "\x1e".join(packets), POLLING_TEXT)

    def _notify(self, headers: dict[str, str], body: bytes) -> Reply:
        if self.notification_reply.status != 201:
            return self.notification_reply
        nonce = json.loads(body)["data"]["doctor"]
        polling = {id(ws.session) for ws in self.websockets if not ws.closed}
        with self.changed:
            for session in self.sessions.values():
                over = "websocket" if id(session) in polling else "polling"
                if session.user and not session.closed and over in self.deliver_over:
                    session.queue.append(NOTIFICATION % nonce)
            self.changed.notify_all()
        return self.notification_reply


class FakeWebSocket:
    """An accepted WebSocket of the fake server (the 101 carries no other headers)."""

    def __init__(self, server: RecordedServer, session: Session) -> None:
        self.server, self.session = server, session
        self.reply = Reply(101, "Switching Protocols", {}, b"", ELAPSED)
        self.extensions = server.extensions
        self.closed = False
        server._held += 1

    def send_text(self, text: str) -> None:
        self.server.handle(self.session, text, {})

    def recv_text(self, deadline: float) -> str:
        with self.server.changed:
            while not self.session.queue:
                if self.closed or self.session.closed:
                    raise TransportClosed("the server closed the WebSocket (code 1000)")
                if not self.server.changed.wait(deadline - time.monotonic()):
                    raise ProbeTimeout("nothing arrived over the WebSocket in time")
            return self.session.queue.pop(0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server._held -= 1


class FakePending(Background):
    """A request answered in a thread, as the real transport's long-polls are."""

    def __init__(self, send: Callable[[], Reply]) -> None:
        self.reply: Reply | None = None

        def answer() -> None:
            self.reply = send()

        super().__init__(answer)

    def result(self) -> Reply:
        self.join(None)
        if self.error:
            raise self.error
        assert self.reply is not None
        return self.reply
