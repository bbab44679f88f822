"""The doctor: diagnose a live deployment in one command, as a browser sees it.

    python -m utils.doctor URL [--origin ORIGIN] [--token JWT] [--api-key KEY]
                               [--json] [--timeout S]
    flask --app app doctor URL ...            (the same command)

It needs none of the server's configuration and imports nothing of the server,
so it runs from any machine against the deployed URL. Each check ends pass, warn
or fail with one line of evidence and one line of fix. Exit status: 0 when
nothing failed (warnings allowed), 1 when a check failed, 2 when the arguments
are unusable or the server cannot be reached.

With ``--api-key`` the round-trip check stores one real notification (type
``doctor``) for the token's user, then marks it read.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from utils.eio_probe import (
    CertificateProblem,
    Polling,
    ProbeError,
    ProbeTimeout,
    Reply,
    Target,
    WebSocket,
    WsEngine,
    WsRefused,
    http_request,
    polling_query,
    sio_connect,
    ssl_context,
    wait_event,
    websocket_query,
)

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
FOREIGN_ORIGIN = "https://doctor-probe.invalid"
# Idle timeouts of common proxies and platforms: nginx proxy_read_timeout and
# AWS ALB 60 s, Heroku's router 55 s. A ping must cross the connection well before.
PROXY_IDLE_SECONDS = 55
PROMPT_SECONDS = 1.0

SYNC_WORKER = ("the server handles one request at a time: gunicorn's default sync "
               "worker, the original incident")
WORKER_FIX = ("run the Procfile's command: gunicorn --worker-class eventlet -w 1 app:app "
              "(ASYNC_MODE=eventlet), or --worker-class gevent with ASYNC_MODE=gevent")
PROXY_FIX = ('nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; '
             'proxy_set_header Connection "upgrade"; (other proxies: pass Upgrade and '
             'Connection through to the app)')


class UsageError(Exception):
    """Unusable arguments: exit 2."""


class Unreachable(Exception):
    """No answer from the URL at all: exit 2."""


@dataclass
class Result:
    id: str
    title: str
    status: str
    evidence: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Options:
    url: str
    origin: str | None = None
    token: str | None = None
    api_key: str | None = None
    timeout: float = 8.0
    json: bool = False


# Report order. The run order differs: checks that hold a long-poll open go last,
# because against a one-request-at-a-time server each stalls what follows.
REPORT_ORDER = [
    ("reachability", "reachability"),
    ("server", "server facts"),
    ("handshake", "polling handshake"),
    ("concurrency", "concurrency"),
    ("websocket", "websocket"),
    ("upgrade", "polling → websocket"),
    ("compression", "compression"),
    ("cors", "CORS for --origin"),
    ("foreign_origin", "foreign origin"),
    ("auth", "auth with --token"),
    ("no_token", "connect without token"),
    ("round_trip", "round trip"),
    ("safari", "Safari"),
]
TITLES = dict(REPORT_ORDER)


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: only for showing exp and aud."""
    parts = token.split(".")
    if len(parts) != 3:
        raise UsageError("--token is not a JWT (three dot-separated parts)")
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (ValueError, TypeError):
        raise UsageError("--token's payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise UsageError("--token's payload is not a JSON object")
    return claims


def _stamp(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return repr(epoch)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class Doctor:
    """Runs every check against one URL and collects a Result per check."""

    def __init__(self, options: Options, progress: Callable[[str], None] | None = None) -> None:
        self.o = options
        self.t = options.timeout
        self.target = Target.parse(options.url)
        self.given = self.target
        self.progress = progress or (lambda _name: None)
        self.results: dict[str, Result] = {}
        self.handshake: dict[str, Any] = {}
        self.handshake_reply: Reply | None = None
        self.healthz: dict[str, Any] | None = None
        self.claims = decode_jwt_claims(options.token) if options.token else None
        self.user_id: str | None = None
        self.auth_payload_works: bool | None = None

    # -- plumbing -----------------------------------------------------------------

    def add(self, check: str, status: str, evidence: str, fix: str = "",
            data: dict[str, Any] | None = None) -> Result:
        result = Result(check, TITLES[check], status, evidence, fix, dict(data or {}))
        self.results[check] = result
        return result

    def polling(self, origin: str | None = None, headers: dict[str, str] | None = None) -> Polling:
        return Polling(self.target, self.t, origin, headers)

    def websocket(self, sid: str | None = None, origin: str | None = None,
                  headers: dict[str, str] | None = None) -> WebSocket:
        return WebSocket(self.target, self.target.eio_path + websocket_query(sid), self.t,
                         origin, headers)

    def auth(self) -> dict[str, Any] | None:
        return {"token": self.o.token} if self.o.token else None

    def run(self) -> list[Result]:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("reachability", self.check_reachability),
            ("server facts", self.check_server),
            ("polling handshake", self.check_handshake),
            ("CORS", self.check_cors),
            ("auth", self.check_auth),
            ("websocket", self.check_websocket),
            ("concurrency", self.check_concurrency),
            ("upgrade", self.check_upgrade),
            ("round trip", self.check_round_trip),
            ("Safari", self.check_safari),
        ]
        for index, (name, step) in enumerate(steps, 1):
            self.progress(f"[{index}/{len(steps)}] {name}")
            step()
            if self.results.get("reachability") and self.results["reachability"].data.get("fatal"):
                break
        return [self.results[key] for key, _ in REPORT_ORDER if key in self.results]

    # -- reachability -------------------------------------------------------------

    def check_reachability(self) -> None:
        path = self.target.eio_path + polling_query()
        try:
            reply = self._follow_get(path)
        except CertificateProblem as exc:
            self.add("reachability", FAIL, f"{self.target.origin}: certificate rejected: {exc}",
                     "install a certificate for this host name from a public CA (the platform's "
                     "own domain, or its managed certificate for your domain)", {"fatal": True})
            return
        except ProbeTimeout as exc:
            if not self._tcp_accepts():
                raise Unreachable(f"{self.given.url()}: {exc}") from None
            self.add("reachability", FAIL, f"{self.target.origin} accepts connections but "
                     f"answered nothing within {self.t:g} s: busy, perhaps with another "
                     f"client's long-poll ({SYNC_WORKER}?)", WORKER_FIX, {"fatal": True})
            return
        except ProbeError as exc:
            raise Unreachable(f"{self.given.url()}: {exc}") from None
        if reply.status == 404:
            self.add("reachability", FAIL,
                     f"GET {self.target.url(self.target.eio_path)} answered 404: no Socket.IO "
                     "server at this URL", "check the URL (the server answers /socket.io/)",
                     {"fatal": True})
            return
        problems: list[tuple[str, str, str]] = []
        notes = [self._scheme_note(problems)]
        if self.target != self.given:
            notes.append(f"{self.given.origin} redirects GET to {self.target.origin}")
        self._post_redirect(problems, notes)
        status = FAIL if any(p[0] == FAIL for p in problems) else WARN if problems else PASS
        evidence = "; ".join([p[1] for p in problems] + [n for n in notes if n])
        fix = "; ".join(p[2] for p in problems)
        self.add("reachability", status, evidence, fix)

    def _tcp_accepts(self) -> bool:
        try:
            with socket.create_connection((self.target.host, self.target.port), self.t):
                return True
        except OSError:
            return False

    def _follow_get(self, path: str) -> Reply:
        """GET, following up to three redirects; later checks use where it lands."""
        for _ in range(4):
            reply = http_request(self.target, "GET", path, timeout=self.t)
            location = reply.header("location")
            if reply.status not in (301, 302, 303, 307, 308) or not location:
                return reply
            try:
                landed = Target.parse(location)
            except ValueError:
                return reply
            self.target = Target(landed.scheme, landed.host, landed.port, self.target.path)
        return reply

    def _scheme_note(self, problems: list[tuple[str, str, str]]) -> str:
        if self.target.secure:
            return self._certificate_note(problems)
        if self.target.is_local():
            return f"plain http on a local address ({self.target.host}): fine for testing"
        mixed = bool(self.o.origin and self.o.origin.startswith("https://"))
        problems.append((
            FAIL if mixed else WARN,
            f"plain http at {self.target.host}" + (
                f": the https page {self.o.origin} may not open http:// or ws:// (mixed "
                "content)" if mixed else ": tokens cross the network in clear"),
            "serve the app over https (clients then use wss:// automatically)",
        ))
        return ""

    def _certificate_note(self, problems: list[tuple[str, str, str]]) -> str:
        try:
            with socket.create_connection((self.target.host, self.target.port), self.t) as raw, \
                    ssl_context().wrap_socket(raw, server_hostname=self.target.host) as tls:
                cert = tls.getpeercert() or {}
        except (OSError, ssl.SSLError) as exc:
            return f"https (certificate not re-read: {exc})"
        expires = ssl.cert_time_to_seconds(cert["notAfter"]) if "notAfter" in cert else None
        if expires is None:
            return "https, certificate valid"
        days = (expires - time.time()) / 86400
        if days < 14:
            problems.append((WARN, f"certificate expires in {days:.0f} days ({_stamp(expires)})",
                             "renew the certificate (or check the platform's auto-renewal)"))
            return "https"
        return f"https, certificate valid until {_stamp(expires)[:10]}"

    def _post_redirect(self, problems: list[tuple[str, str, str]], notes: list[str]) -> None:
        """socket.io-client sends every packet as a POST; a 301/302/303 turns it into a
        GET on the next hop (Railway's http→https redirect does this), so they vanish."""
        plain = self.given if not self.given.secure else self.given.with_scheme("http")
        path = plain.eio_path + polling_query()
        try:
            reply = http_request(plain, "POST", path, {"Content-Type": "text/plain;charset=UTF-8"},
                                 b"1:6", timeout=min(self.t, 3.0))
        except ProbeError:
            if self.given.secure:
                notes.append(f"{plain.origin} not served")
            return
        location = reply.header("location")
        if reply.status in (301, 302, 303):
            given_plain = not self.given.secure
            problems.append((
                FAIL if given_plain else WARN,
                f"POST {plain.url('/socket.io/')} answered {reply.status} → {location or '?'}: "
                "the method changes to GET, so polling's POSTs never arrive",
                f"give clients {_base(location) or 'the final https:// URL'} directly"
                + ("" if given_plain else " (never the http:// one)")
                + ", or have the front redirect with 307/308, which keep the method",
            ))
        elif reply.status in (307, 308):
            notes.append(f"POST to http:// is redirected with {reply.status} (method kept)")

    # -- server facts -------------------------------------------------------------

    def check_server(self) -> None:
        try:
            reply = http_request(self.target, "GET", self.target.path + "/healthz",
                                 timeout=self.t)
        except ProbeError as exc:
            self.add("server", WARN, f"GET /healthz: {exc}",
                     "serve /healthz (this backend does) so operators can read the facts")
            return
        body = reply.json() if reply.status == 200 else None
        if not isinstance(body, dict) or "async_mode" not in body:
            self.add("server", WARN, f"GET /healthz answered {reply.status} without async_mode: "
                     "not this backend, or an old version",
                     "deploy this backend's /healthz to report async mode and version")
            return
        self.healthz = body
        mode = body.get("async_mode")
        facts = (f"async_mode {mode}, version {body.get('version', '?')}, transports "
                 f"{','.join(body.get('transports') or []) or '?'}, message queue "
                 f"{body.get('message_queue', '?')}, {body.get('environment', '?')}")
        if mode == "threading":
            self.add("server", FAIL, f"{facts}: threading mode (under gunicorn's sync worker: "
                     "one request at a time, no usable WebSocket)",
                     WORKER_FIX, body)
        elif mode in ("eventlet", "gevent") and body.get("monkey_patched") is False:
            self.add("server", WARN, f"{facts}; not monkey-patched: blocking I/O stalls sockets",
                     f"start it with gunicorn --worker-class {mode} (it patches before import)",
                     body)
        else:
            self.add("server", PASS, facts, data=body)

    # -- handshake ----------------------------------------------------------------

    def check_handshake(self) -> None:
        session = self.polling()
        try:
            info = session.open()
        except ProbeError as exc:
            self.add("handshake", FAIL, f"GET {self.target.eio_path}?EIO=4&transport=polling: "
                     f"{exc}", "the server must run Flask-SocketIO 5 / python-socketio 5 "
                     "(Engine.IO 4) at /socket.io/")
            return
        finally:
            session.close()
        self.handshake, self.handshake_reply = info, session.handshake
        upgrades = info.get("upgrades")
        interval = (info.get("pingInterval") or 0) / 1000
        timeout = (info.get("pingTimeout") or 0) / 1000
        payload = info.get("maxPayload")
        evidence = (f"sid {str(info.get('sid'))[:8]}…, upgrades {json.dumps(upgrades)}, "
                    f"pingInterval {interval:g} s, pingTimeout {timeout:g} s, maxPayload "
                    f"{payload if payload is not None else 'absent'}")
        if not upgrades or "websocket" not in upgrades:
            self.add("handshake", FAIL, f"{evidence}: no websocket upgrade offered, the "
                     "signature of a sync worker or a threading server", WORKER_FIX, info)
        elif interval >= PROXY_IDLE_SECONDS:
            self.add("handshake", WARN, f"{evidence}: a ping every {interval:g} s outlasts "
                     "common proxy idle timeouts (nginx and AWS ALB 60 s, Heroku 55 s)",
                     "PING_INTERVAL=25 (the default)", info)
        elif timeout < 5:
            self.add("handshake", WARN, f"{evidence}: a {timeout:g} s pingTimeout drops "
                     "throttled background tabs (Safari, mobile)",
                     "PING_TIMEOUT=60 (the default)", info)
        elif payload is None:
            self.add("handshake", WARN, f"{evidence}: an older Engine.IO server",
                     "upgrade to python-engineio 4.x", info)
        else:
            self.add("handshake", PASS, evidence, data=info)

    # -- CORS ---------------------------------------------------------------------

    def check_cors(self) -> None:
        if self.o.origin:
            self._allowed_origin(self.o.origin)
        else:
            self.add("cors", SKIP, "no --origin given",
                     "pass --origin https://your-front-end to check it is allowed")
        self._foreign_origin()

    def _allowed_origin(self, origin: str) -> None:
        session = self.polling(origin=origin)
        try:
            session.open()
            refused = None
        except ProbeError as exc:
            refused = exc
        finally:
            session.close()
        reply = session.handshake
        if reply is None:
            self.add("cors", FAIL, f"handshake with Origin {origin}: {refused}",
                     "check the URL and the server's logs")
            return
        if refused is not None or reply.header("access-control-allow-origin") != origin:
            self.add("cors", FAIL, f"Origin {origin} refused on polling ({reply.status} "
                     f"{reply.text()[:60].strip()})",
                     f"add it to FRONTEND_URLS on the server: FRONTEND_URLS={origin} (comma-"
                     "separated with the origins already there)", {"origin": origin})
            return
        if reply.header("access-control-allow-credentials").lower() != "true":
            self.add("cors", WARN, f"{origin} echoed without Access-Control-Allow-Credentials: "
                     "true", "set cors_credentials=True (clients with withCredentials fail)")
            return
        ws_note = self._origin_on_websocket(origin)
        if ws_note:
            self.add("cors", FAIL, f"{origin} allowed on polling but {ws_note} on WebSocket",
                     f"FRONTEND_URLS={origin}; the same origin policy must cover WebSocket")
            return
        self.add("cors", PASS, f"{origin} echoed with Access-Control-Allow-Credentials: true; "
                 "WebSocket accepted it too", data={"origin": origin})

    def _origin_on_websocket(self, origin: str) -> str | None:
        """None when a WebSocket from ``origin`` gets 101, else what happened."""
        ws = self.websocket(origin=origin)
        try:
            ws.connect()
            return None
        except WsRefused as exc:
            # Engine.IO names the origin refusal; other refusals are for other checks.
            return f"refused ({exc.reply.status})" if b"origin" in exc.reply.body.lower() \
                else None
        except ProbeError:
            return None
        finally:
            ws.close()

    def _foreign_origin(self) -> None:
        session = self.polling(origin=FOREIGN_ORIGIN)
        try:
            session.open()
        except ProbeError:
            pass
        finally:
            session.close()
        reply = session.handshake
        echoed = reply.header("access-control-allow-origin") if reply else ""
        polling_open = bool(reply and reply.status == 200 and echoed in (FOREIGN_ORIGIN, "*"))
        ws_open = self._origin_on_websocket_opens(FOREIGN_ORIGIN)
        fix = ("list the exact front-end origins (FRONTEND_URLS=https://app.example.com); "
               "never cors_allowed_origins='*'")
        if polling_open or ws_open:
            where = " and ".join(w for w, hit in (("polling", polling_open),
                                                  ("WebSocket", ws_open)) if hit)
            credentials = reply.header("access-control-allow-credentials") if reply else ""
            self.add("foreign_origin", FAIL,
                     f"made-up origin {FOREIGN_ORIGIN} accepted on {where}"
                     + (f" (Access-Control-Allow-Origin: {echoed}, credentials {credentials})"
                        if polling_open else "")
                     + ": the server echoes every origin, any site can open sockets as your "
                       "users (cross-site WebSocket hijacking)", fix)
            return
        status = reply.status if reply else "no answer"
        self.add("foreign_origin", PASS, f"made-up origin {FOREIGN_ORIGIN} refused on polling "
                 f"({status}) and on WebSocket")

    def _origin_on_websocket_opens(self, origin: str) -> bool:
        ws = self.websocket(origin=origin)
        try:
            ws.connect()
            return True
        except ProbeError:
            return False
        finally:
            ws.close()

    # -- auth ---------------------------------------------------------------------

    def check_auth(self) -> None:
        self._no_token()
        if not self.o.token:
            self.add("auth", SKIP, "no --token given",
                     "pass --token <a user's JWT> to check a real connect")
            return
        claims = self.claims or {}
        shown = self._claims_text(claims)
        session = self.polling(origin=self.o.origin)
        try:
            session.open()
            outcome = sio_connect(session, self.auth(), self.t)
        except ProbeError as exc:
            self.add("auth", FAIL, f"connect with the token over polling: {exc}; token {shown}",
                     "see the handshake and CORS checks")
            return
        finally:
            session.close()
        self.auth_payload_works = outcome.accepted
        if not outcome.accepted:
            self.add("auth", FAIL, f"connect with the token refused: {outcome.message} "
                     f"({outcome.code}); token {shown}", self._token_fix(outcome.code, claims))
            return
        welcome = outcome.welcome or {}
        if "user_id" not in welcome:
            self.add("auth", WARN, f"connected in {_ms(outcome.elapsed)} but no auth_success "
                     f"arrived; token {shown}", "the server should emit auth_success "
                     "{user_id, unread_count} on connect (CONTRACT §4)")
            return
        self.user_id = str(welcome["user_id"])
        expiry_soon = isinstance(claims.get("exp"), int | float) and \
            claims["exp"] - time.time() < 300
        self.add("auth", WARN if expiry_soon else PASS,
                 f"connected as user {self.user_id}, unread {welcome.get('unread_count')} "
                 f"({_ms(outcome.elapsed)}); token {shown}",
                 "mint a fresh token: this one expires within 5 minutes" if expiry_soon else "",
                 {"user_id": self.user_id, "unread_count": welcome.get("unread_count")})

    @staticmethod
    def _claims_text(claims: dict[str, Any]) -> str:
        exp = claims.get("exp")
        left = ""
        if isinstance(exp, int | float):
            seconds = exp - time.time()
            left = f" ({'expired' if seconds < 0 else f'in {seconds / 60:.0f} min'})"
        aud = claims.get("aud")
        return (f"exp {_stamp(exp) if exp is not None else 'none'}{left}, aud "
                f"{json.dumps(aud) if aud is not None else 'none'} (decoded, not verified)")

    @staticmethod
    def _token_fix(code: str | None, claims: dict[str, Any]) -> str:
        if code == "token_expired":
            return "mint a fresh token (flask --app app create-token USER_ID)"
        if code == "token_invalid":
            aud = claims.get("aud")
            return ("the server's JWT_SECRET_KEY/JWT_PUBLIC_KEY, JWT_ALGORITHMS"
                    + (f" and JWT_AUDIENCE (token aud {json.dumps(aud)})" if aud else
                       ", JWT_AUDIENCE") + " must match the token's issuer")
        if code and code.startswith("too_many"):
            return "the server's rate limits refused the doctor: wait a minute and run it again"
        return "check the token and the server's JWT_* settings"

    def _no_token(self) -> None:
        session = self.polling(origin=self.o.origin)
        try:
            session.open()
            outcome = sio_connect(session, None, self.t, welcome_wait=0.3)
        except ProbeError as exc:
            self.add("no_token", FAIL, f"connect without a token over polling: {exc}",
                     "see the handshake and CORS checks")
            return
        finally:
            session.close()
        fix = ("refuse connects without a valid token: raise ConnectionRefusedError("
               "'unauthorized', {'code': 'token_missing'}) in the connect handler")
        if outcome.accepted:
            self.add("no_token", FAIL, "a socket with no token was accepted: unauthenticated "
                     "sockets accepted", fix)
        elif outcome.code == "token_missing":
            self.add("no_token", PASS, f"refused: {outcome.message} (token_missing)")
        else:
            self.add("no_token", WARN, f"refused, but as {outcome.message} ({outcome.code}), "
                     "not token_missing", "answer a missing token with the contract's code "
                     "token_missing so clients can tell it apart")

    # -- websocket ----------------------------------------------------------------

    def check_websocket(self) -> None:
        url = self.target.ws_url(self.target.eio_path)
        ws = self.websocket(origin=self.o.origin)
        start = time.monotonic()
        try:
            ws.connect()
            engine = WsEngine(ws)
            opened = engine.recv(start + self.t)
            if not opened.startswith("0{"):
                raise ProbeError(f"first message {opened[:40]!r} is not an Engine.IO open packet")
            outcome = sio_connect(engine, self.auth(), self.t, welcome_wait=0.5)
            wait = min(self.t, 2.0)
            held = self._second_request(wait) is None
        except WsRefused as exc:
            self.add("websocket", FAIL, *self._ws_refusal(url, exc.reply))
            self.add("compression", SKIP, "no WebSocket to inspect")
            return
        except ProbeError as exc:
            self.add("websocket", FAIL, f"{url}: {exc}", self._ws_fix_unknown())
            self.add("compression", SKIP, "no WebSocket to inspect")
            return
        finally:
            ws.close()
        who = f" as {outcome.welcome.get('user_id')}" if outcome.welcome else ""
        said = f"connected{who}" if outcome.accepted else \
            f"answered (refused: {outcome.code or outcome.message})"
        if held:
            self.add("websocket", FAIL, f"{url} opened, but while it was open GET /healthz got "
                     f"no answer for {wait:g} s: the socket holds the only worker, so WebSocket "
                     f"is unusable; {SYNC_WORKER}", WORKER_FIX)
            self._compression(ws)
            return
        self.add("websocket", PASS, f"{url}: 101 in {_ms(ws.reply.elapsed)}, Socket.IO "
                 f"{said} over it")
        self._compression(ws)

    def _ws_refusal(self, url: str, reply: Reply) -> tuple[str, str]:
        body = reply.text()[:80].strip()
        who = reply.server_name()
        evidence = f"{url} {reply.status} {reply.reason} instead of 101" + (
            f" (from {who})" if who else "") + (f": {body}" if body else "")
        offered = "websocket" in (self.handshake.get("upgrades") or [])
        if "invalid websocket upgrade" in body.lower() or (
                offered and reply.status in (400, 426)):
            proxy = f"the proxy in front ({who})" if who else "a proxy in front"
            return (f"{evidence}; the Upgrade header did not reach the app: {proxy} drops "
                    "it", PROXY_FIX)
        if not offered:
            return f"{evidence}; the server offers no WebSocket", WORKER_FIX
        if reply.status == 400 and "origin" in body.lower():
            return evidence, "see the CORS check"
        return evidence, self._ws_fix_unknown()

    def _ws_fix_unknown(self) -> str:
        if self.target.secure:
            return ("clients must use wss:// for an https server; check that the proxy passes "
                    "WebSocket upgrades through")
        return "check that the proxy passes WebSocket upgrades (Upgrade/Connection headers)"

    def _compression(self, ws: WebSocket) -> None:
        header = ws.reply.header("sec-websocket-extensions") if ws.reply else ""
        if ws.deflate is not None:
            self.add("compression", WARN, f"permessage-deflate negotiated ({header}): Safari "
                     "has shipped bugs with compressed WebSocket frames",
                     "strip Sec-WebSocket-Extensions before Engine.IO sees it (this backend's "
                     "NoWebSocketCompression middleware does)", {"extensions": header})
        else:
            self.add("compression", PASS, "permessage-deflate offered, not negotiated")

    def check_upgrade(self) -> None:
        """The path browsers take: polling first, a long-poll pending, then the upgrade."""
        session = self.polling(origin=self.o.origin)
        try:
            session.open()
        except ProbeError as exc:
            self.add("upgrade", FAIL, f"polling handshake: {exc}" + self._busy_hint(exc),
                     WORKER_FIX if isinstance(exc, ProbeTimeout) else "see the handshake check")
            return
        # As in a browser: the session's long-poll is on its way before the upgrade.
        pending = session.start_poll(self.t + 30)
        time.sleep(0.1)
        ws = self.websocket(sid=session.sid, origin=self.o.origin)
        start = time.monotonic()
        try:
            ws.connect()
            ws.send_text("2probe")
            answer = ws.recv_text(start + self.t)
            if answer != "3probe":
                raise ProbeError(f"probe answered {answer[:20]!r}, not 3probe")
            ws.send_text("5")
            engine = WsEngine(ws)
            outcome = sio_connect(engine, self.auth(), self.t, welcome_wait=0.3)
        except WsRefused as exc:
            self.add("upgrade", FAIL, *self._ws_refusal(self.target.ws_url(
                self.target.eio_path), exc.reply))
            return
        except ProbeTimeout as exc:
            self.add("upgrade", FAIL, f"the upgrade got no answer within {self.t:g} s while the "
                     f"session's long-poll was pending ({exc}): WebSocket unusable, "
                     f"{SYNC_WORKER}", WORKER_FIX)
            return
        except ProbeError as exc:
            self.add("upgrade", FAIL, f"upgrade failed: {exc}", self._ws_fix_unknown())
            return
        finally:
            ws.close()
        took = time.monotonic() - start
        released = pending.join(2.0)
        said = "connected" if outcome.accepted else f"answered (refused: {outcome.code})"
        self.add("upgrade", PASS, f"probe answered and upgraded in {_ms(took)}; the pending "
                 f"long-poll was {'released' if released else 'still held'}; Socket.IO {said} "
                 "over the upgraded socket")

    # -- round trip ---------------------------------------------------------------

    def check_round_trip(self) -> None:
        if not self.o.api_key:
            self.add("round_trip", SKIP, "no --api-key given",
                     "pass --api-key $NOTIFY_API_KEY (with --token) to time a real delivery")
            return
        if not self.user_id:
            self.add("round_trip", SKIP, "no connected user (see the auth check)",
                     "fix the auth check first")
            return
        with self._two_sockets() as sockets:
            if isinstance(sockets[0], str):
                self.add("round_trip", FAIL, *sockets)
                return
            self._deliver(*sockets)

    @contextmanager
    def _two_sockets(self) -> Iterator[tuple[Polling, WsEngine] | tuple[str, str]]:
        """A connected socket of the user over each transport, or (evidence, fix)."""
        session = self.polling(origin=self.o.origin)
        ws = self.websocket(origin=self.o.origin)
        try:
            try:
                session.open()
                if not sio_connect(session, self.auth(), self.t, welcome_wait=0.5).accepted:
                    yield "connect over polling refused", "see the auth check"
                    return
                ws.connect()
                engine = WsEngine(ws)
                engine.recv(time.monotonic() + self.t)  # the open packet
                if not sio_connect(engine, self.auth(), self.t, welcome_wait=0.5).accepted:
                    yield "connect over WebSocket refused", "see the websocket check"
                    return
            except ProbeError as exc:
                busy = isinstance(exc, ProbeTimeout)
                yield (f"connecting user {self.user_id} over polling and WebSocket: {exc}"
                       + self._busy_hint(exc),
                       WORKER_FIX if busy else "see the websocket and auth checks")
                return
            yield session, engine
        finally:
            ws.close()
            session.close()

    def _deliver(self, session: Polling, engine: WsEngine) -> None:
        nonce = base64.urlsafe_b64encode(os.urandom(6)).decode()
        body = json.dumps({"user_id": self.user_id, "type": "doctor",
                           "title": "doctor: round-trip check", "data": {"doctor": nonce}})
        mine = lambda arg: isinstance(arg, dict) and (arg.get("data") or {}).get("doctor") == nonce  # noqa: E731
        start = time.monotonic()
        deadline = start + self.t
        arrivals: dict[str, float] = {}

        def over_polling() -> None:
            wait_event(session, "notification", deadline, mine)
            arrivals["polling"] = time.monotonic() - start

        poller = Background(over_polling)
        try:
            reply = http_request(self.target, "POST", self.target.path + "/api/notifications",
                                 {"Authorization": f"Bearer {self.o.api_key}",
                                  "Content-Type": "application/json"}, body.encode(),
                                 timeout=self.t)
        except ProbeTimeout:
            self.add("round_trip", FAIL, f"POST /api/notifications got no answer within "
                     f"{self.t:g} s while a WebSocket was open: {SYNC_WORKER}", WORKER_FIX)
            return
        except ProbeError as exc:
            self.add("round_trip", FAIL, str(exc), "check the server's logs")
            return
        if reply.status != 201:
            error = (reply.json() or {}).get("error", {}) if isinstance(reply.json(), dict) else {}
            self.add("round_trip", FAIL, f"POST /api/notifications answered {reply.status} "
                     f"{error.get('code', '')}", "pass the server's NOTIFY_API_KEY as --api-key"
                     if reply.status in (401, 403) else "check the server's logs")
            return
        try:
            note = wait_event(engine, "notification", deadline, mine)
            arrivals["websocket"] = time.monotonic() - start
        except ProbeError:
            note = None
        poller.join(max(0.0, deadline - time.monotonic()) + 0.5)
        self._mark_read(engine, note)
        missing = [t for t in ("polling", "websocket") if t not in arrivals]
        timing = ", ".join(f"{t} {_ms(arrivals[t])}" for t in ("polling", "websocket")
                           if t in arrivals)
        if missing:
            self.add("round_trip", FAIL, f"notification for {self.user_id} not delivered over "
                     f"{' and '.join(missing)} within {self.t:g} s" + (f" ({timing})" if timing
                                                                       else ""),
                     "run one worker per process, or set REDIS_URL when there are several",
                     arrivals)
            return
        self.add("round_trip", PASS, f"POST → arrival for user {self.user_id}: {timing}",
                 data={f"{k}_ms": round(v * 1000, 1) for k, v in arrivals.items()})

    @staticmethod
    def _mark_read(engine: WsEngine, note: dict[str, Any] | None) -> None:
        """Leave the user's unread count as it was."""
        if not note or "id" not in note:
            return
        try:
            engine.send("421" + json.dumps(["mark_read", {"ids": [note["id"]]}]))
            engine.recv(time.monotonic() + 1.0)
        except ProbeError:
            pass

    # -- concurrency --------------------------------------------------------------

    def check_concurrency(self) -> None:
        session = self.polling()
        try:
            session.open()
        except ProbeTimeout:
            self.add("concurrency", FAIL, f"a new request got no answer within {self.t:g} s "
                     f"while an earlier long-poll was pending: {SYNC_WORKER}", WORKER_FIX)
            return
        except ProbeError as exc:
            self.add("concurrency", FAIL, f"a new session: {exc}", "see the handshake check")
            return
        # No namespace CONNECT: the long-poll then waits for the next ping.
        pending = session.start_poll(self.t + 60)  # sent before the second request
        time.sleep(0.1)
        wait = min(self.t, 3.0)
        took = self._second_request(wait)
        if took is not None:
            session.close()  # answers the pending long-poll; a stuck server is left alone
        if took is None:
            self.add("concurrency", FAIL, f"nothing answered for {wait:g} s while one long-poll "
                     f"was pending: {SYNC_WORKER}", WORKER_FIX)
        elif took > PROMPT_SECONDS:
            self.add("concurrency", WARN, f"a second request took {_ms(took)} while a long-poll "
                     "was pending", "check the worker class and the server's load")
        else:
            pending.join(1.0)
            self.add("concurrency", PASS, f"GET /healthz answered in {_ms(took)} while a "
                     "long-poll was pending", data={"elapsed_ms": round(took * 1000, 1)})

    def _second_request(self, wait: float) -> float | None:
        """Seconds GET /healthz took, or None when it got no answer within ``wait``."""
        try:
            return http_request(self.target, "GET", self.target.path + "/healthz",
                                timeout=wait).elapsed
        except ProbeTimeout:
            return None
        except ProbeError:
            return 0.0  # answered, if badly: the server check reports /healthz itself

    def _busy_hint(self, exc: ProbeError) -> str:
        return (" (still busy with an earlier long-poll: one request at a time, gunicorn's "
                "sync worker)") if isinstance(exc, ProbeTimeout) else ""

    # -- Safari -------------------------------------------------------------------

    def check_safari(self) -> None:
        advice = ("in the page: io(URL, {auth: {token}}); extraHeaders never reaches the "
                  "server over WebSocket, and Safari sends no third-party cookies")
        reply = self.handshake_reply
        cookie = reply.header("set-cookie") if reply else ""
        compressed = self.results.get("compression")
        notes: list[str] = []
        status = PASS
        if cookie:
            status = WARN
            notes.append(f"the handshake sets a cookie ({cookie.split(';')[0].split('=')[0]}): "
                         "Safari drops it cross-site, so nothing may rely on it (sticky "
                         "sessions by cookie break)")
        if self.auth_payload_works is False and self._header_token_works():
            status = WARN
            notes.append("the token is accepted in an Authorization header but not in the auth "
                         "payload: on WebSocket browsers cannot send headers")
        if compressed and compressed.status == WARN:
            status = WARN
            notes.append("permessage-deflate is negotiated (see compression)")
        if not notes:
            notes.append("no cookie set by the handshake" + (
                "; the token is read from the auth payload" if self.auth_payload_works else ""))
        self.add("safari", status, "; ".join(notes), advice)

    def _header_token_works(self) -> bool:
        session = self.polling(origin=self.o.origin,
                               headers={"Authorization": f"Bearer {self.o.token}"})
        try:
            session.open()
            return sio_connect(session, None, self.t, welcome_wait=0.2).accepted
        except ProbeError:
            return False
        finally:
            session.close()


def _base(url: str) -> str:
    try:
        return Target.parse(url).origin
    except ValueError:
        return ""


class Background:
    """A daemon thread for a request that must stay pending while others run."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self._fn = fn
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # reported by whoever joins, never raised here
            self.error = exc

    def join(self, timeout: float) -> bool:
        """True when it finished (answered or failed) within ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


# -- output ---------------------------------------------------------------------------

SYMBOLS = {PASS: "✓", WARN: "⚠", FAIL: "✗", SKIP: "·"}
COLOURS = {PASS: "32", WARN: "33", FAIL: "31", SKIP: "2"}


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def verdict(results: list[Result]) -> str:
    statuses = {r.status for r in results}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS


def render_json(options: Options, results: list[Result], target: Target | None) -> str:
    return json.dumps({
        "url": options.url,
        "checked_url": target.url() if target else options.url,
        "origin": options.origin,
        "verdict": verdict(results),
        "exit_code": exit_code(results),
        "checks": [asdict(r) for r in results],
    }, indent=2, default=str)


def render_table(options: Options, results: list[Result], colour: bool) -> str:
    def paint(status: str, text: str) -> str:
        return f"\033[{COLOURS[status]}m{text}\033[0m" if colour else text

    width = max(len(r.title) for r in results) if results else 10
    head = f"notification doctor: {options.url}"
    if options.origin:
        head += f" (origin {options.origin})"
    lines = [head, ""]
    for r in results:
        lines.append(f"  {paint(r.status, SYMBOLS[r.status])} {r.title:<{width}}  {r.evidence}")
        if r.fix and r.status != PASS:
            lines.append(f"    {'':<{width}}  {paint(r.status, 'fix:')} {r.fix}")
        elif r.fix and r.id == "safari":
            lines.append(f"    {'':<{width}}  note: {r.fix}")
    counts = {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL, SKIP)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines += ["", f"{len(results)} checks: {summary}; exit {exit_code(results)}"]
    return "\n".join(lines)


def parse_args(argv: list[str], prog: str = "python -m utils.doctor") -> Options:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Diagnose a live deployment of the notification backend, as a browser "
                    "sees it. Exit 0: nothing failed; 1: a check failed; 2: unusable "
                    "arguments or unreachable.")
    parser.add_argument("url", help="the server's public URL, e.g. https://notify.example.com")
    parser.add_argument("--origin", help="the front end's origin, e.g. https://app.example.com")
    parser.add_argument("--token", help="a user's JWT: checks a real connect")
    parser.add_argument("--api-key", dest="api_key",
                        help="NOTIFY_API_KEY (with --token): times a real delivery; stores one "
                             "notification of type 'doctor' for that user")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=float, default=8.0,
                        help="seconds to wait for each answer (default 8)")
    ns = parser.parse_args(argv)
    options = Options(ns.url, ns.origin.rstrip("/") if ns.origin else None, ns.token,
                      ns.api_key, ns.timeout, ns.json)
    _validate(options)
    return options


def _validate(options: Options) -> None:
    try:
        Target.parse(options.url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if options.origin:
        origin = Target.parse(options.origin) if options.origin.startswith(("http://",
                                                                             "https://")) else None
        if origin is None or origin.path:
            raise UsageError(f"--origin {options.origin!r} is not an origin like "
                             "https://app.example.com")
    if not 0.5 <= options.timeout <= 120:
        raise UsageError("--timeout must be between 0.5 and 120 seconds")
    if options.api_key and not options.token:
        raise UsageError("--api-key needs --token: the test notification goes to that user")
    if options.token:
        decode_jwt_claims(options.token)


def progress_writer(stream: TextIO) -> Callable[[str], None] | None:
    if not stream.isatty():
        return None

    def write(text: str) -> None:
        stream.write(f"\r\033[K  checking {text}…")
        stream.flush()

    return write


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, prog: str = "python -m utils.doctor") -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv, prog)
    except UsageError as exc:
        print(f"doctor: {exc}", file=err)
        return 2
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2)
        return int(exc.code or 0)
    progress = progress_writer(err)
    try:
        doctor = Doctor(options, progress)
        results = doctor.run()
    except Unreachable as exc:
        if progress:
            err.write("\r\033[K")
        if options.json:
            print(json.dumps({"url": options.url, "verdict": "unreachable", "exit_code": 2,
                              "error": str(exc), "checks": []}, indent=2), file=out)
        else:
            print(f"doctor: unreachable: {exc}", file=err)
        return 2
    except UsageError as exc:
        print(f"doctor: {exc}", file=err)
        return 2
    if progress:
        err.write("\r\033[K")
        err.flush()
    if options.json:
        print(render_json(options, results, doctor.target), file=out)
    else:
        colour = out.isatty() and not os.environ.get("NO_COLOR")
        print(render_table(options, results, colour), file=out)
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
