"""Reachability: the URL answers Engine.IO, over https with a valid certificate, and
a POST to it is not redirected as a GET. It also learns which transports the server
serves (utils/doctor/served.py), before its first Engine.IO request, so a
WebSocket-only server is never sent a polling request it must refuse."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from utils.doctor import packets, served
from utils.doctor.advice import SYNC_WORKER, WORKER_FIX
from utils.doctor.model import FAIL, PASS, WARN, Context, Facts, Result, Unreachable
from utils.doctor.probe import polling_query, session_sid, websocket_query
from utils.doctor.target import Target, origin_of
from utils.doctor.transport import (
    CertificateProblem,
    ProbeError,
    ProbeTimeout,
    Reply,
    Transport,
    WsRefused,
)
from utils.doctor.units import stamp

REDIRECTS = (301, 302, 303, 307, 308)
METHOD_CHANGING_REDIRECTS = (301, 302, 303)
MAX_REDIRECTS = 3
NOT_FOUND = 404
CERTIFICATE_WARN_DAYS = 14
POST_PROBE_TIMEOUT = 3.0  # seconds: the http:// variant of an https URL may not answer
HEALTHZ_WAIT = 3.0  # seconds, at most, for the /healthz that names the transports
SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class Problem:
    status: str
    evidence: str
    fix: str


def check(ctx: Context) -> Result:
    given = ctx.target
    transports, source = ctx.facts.transports, ctx.facts.transports_from
    if transports is None:
        transports, source = healthz_transports(ctx.transport, given, ctx.timeout), \
            served.FROM_HEALTHZ
    websocket_only = transports == served.WEBSOCKET_ONLY
    try:
        if websocket_only:
            reply, landed = follow_websocket(ctx.transport, given, ctx.timeout)
        else:
            reply, landed = follow_get(ctx.transport, given, ctx.timeout)
    except CertificateProblem as exc:
        return fatal(f"{given.origin}: certificate rejected: {exc}",
                     "install a certificate for this host name from a public CA (the "
                     "platform's own domain, or its managed certificate for your domain)")
    except ProbeTimeout as exc:
        if not ctx.transport.tcp_accepts(given, ctx.timeout):
            raise Unreachable(f"{given.url()}: {exc}") from None
        return fatal(f"{given.origin} accepts connections but answered nothing within "
                     f"{ctx.timeout:g} s: busy, perhaps with another client's long-poll "
                     f"({SYNC_WORKER}?)", WORKER_FIX)
    except ProbeError as exc:
        raise Unreachable(f"{given.url()}: {exc}") from None
    if reply.status == NOT_FOUND:
        return fatal(f"GET {landed.url(landed.eio_path)} answered 404: no Socket.IO server "
                     "at this URL", "check the URL (the server answers /socket.io/)")
    if transports is None and served.refuses_polling(reply):
        transports, source, websocket_only = served.WEBSOCKET_ONLY, served.FROM_REFUSAL, True
    notes: list[str] = []
    problems: list[Problem] = []
    steps = [scheme(ctx.transport, landed, ctx.origin, ctx.timeout),
             redirected(given, landed, websocket_only)]
    if not websocket_only:  # its clients never POST: nothing for a redirect to turn into a GET
        steps.append(post_redirect(ctx.transport, given, landed, session_sid(reply),
                                   ctx.timeout))
    for note, problem in steps:
        notes += [note] if note else []
        problems += [problem] if problem else []
    status = FAIL if any(p.status == FAIL for p in problems) else WARN if problems else PASS
    data = {"transports": list(transports), "transports_from": source} if transports else {}
    return Result(status, "; ".join([p.evidence for p in problems] + notes),
                  "; ".join(p.fix for p in problems), data,
                  Facts(target=landed, transports=transports,
                        transports_from=source if transports else None))


def fatal(evidence: str, fix: str) -> Result:
    return Result(FAIL, evidence, fix, facts=Facts(fatal=True))


def healthz_transports(transport: Transport, target: Target,
                       timeout: float) -> tuple[str, ...] | None:
    """The transports this backend's /healthz lists; None when it says nothing usable
    (another server, an old version, no answer): the handshake then tells."""
    wait = min(timeout, HEALTHZ_WAIT)
    try:
        reply, _landed = follow(target, lambda t: transport.request(
            t, "GET", t.path + "/healthz", timeout=wait))
    except ProbeError:
        return None
    return served.from_healthz(reply.json()) if reply.status == 200 else None


def follow(target: Target, answer: Callable[[Target], Reply]) -> tuple[Reply, Target]:
    """``answer(target)``, following up to MAX_REDIRECTS redirects: the last answer and
    where it came from."""
    for _ in range(MAX_REDIRECTS + 1):
        reply = answer(target)
        moved = target.moved_to(reply.header("location")) if reply.status in REDIRECTS \
            else None
        if moved is None:
            return reply, target
        target = moved
    return reply, target


def follow_get(transport: Transport, target: Target, timeout: float) -> tuple[Reply, Target]:
    """The handshake GET, following up to MAX_REDIRECTS redirects; later checks use
    where it lands."""
    return follow(target, lambda t: transport.request(t, "GET", t.eio_path + polling_query(),
                                                      timeout=timeout))


def follow_websocket(transport: Transport, target: Target,
                     timeout: float) -> tuple[Reply, Target]:
    """A WebSocket opened and closed at once, following up to MAX_REDIRECTS redirects
    (a browser would not: see ``redirected``)."""
    def answer(at: Target) -> Reply:
        """The 101, or the answer that refused the WebSocket."""
        try:
            ws = transport.open_websocket(at, at.eio_path + websocket_query(), {}, timeout)
        except WsRefused as exc:
            return exc.reply
        ws.close()
        return ws.reply

    return follow(target, answer)


def redirected(given: Target, landed: Target,
               websocket_only: bool) -> tuple[str, Problem | None]:
    if landed == given:
        return "", None
    if websocket_only:  # browsers never follow a redirect answering a WebSocket request
        return "", Problem(WARN, f"{given.origin} redirects to {landed.origin}: a WebSocket "
                           "does not follow redirects, so clients given this URL cannot "
                           "connect", f"give clients {landed.url()} directly")
    return f"{given.origin} redirects GET to {landed.origin}", None


def scheme(transport: Transport, target: Target, origin: str | None,
           timeout: float) -> tuple[str, Problem | None]:
    if target.secure:
        return certificate(transport, target, timeout)
    return plain_http(target, origin)


def plain_http(target: Target, origin: str | None) -> tuple[str, Problem | None]:
    """Plain http is a test set-up on a local address, a leak or mixed content elsewhere."""
    if target.is_local():
        return f"plain http on a local address ({target.host}): fine for testing", None
    mixed = bool(origin and origin.startswith("https://"))
    consequence = (f": the https page {origin} may not open http:// or ws:// (mixed content)"
                   if mixed else ": tokens cross the network in clear")
    return "", Problem(FAIL if mixed else WARN, f"plain http at {target.host}{consequence}",
                       "serve the app over https (clients then use wss:// automatically)")


def certificate(transport: Transport, target: Target,
                timeout: float) -> tuple[str, Problem | None]:
    try:
        expires = transport.certificate_expiry(target, timeout)
    except ProbeError as exc:
        return f"https (certificate not re-read: {exc})", None
    if expires is None:
        return "https, certificate valid", None
    days = (expires - time.time()) / SECONDS_PER_DAY
    if days < CERTIFICATE_WARN_DAYS:
        return "https", Problem(WARN, f"certificate expires in {days:.0f} days "
                                f"({stamp(expires)})",
                                "renew the certificate (or check the platform's auto-renewal)")
    return f"https, certificate valid until {stamp(expires)[:10]}", None


def post_redirect(transport: Transport, given: Target, landed: Target, sid: str | None,
                  timeout: float) -> tuple[str, Problem | None]:
    """socket.io-client sends every packet as a POST; a 301/302/303 turns it into a
    GET on the next hop (Railway's http→https redirect does this), so they vanish.

    The POST is the reachability session's CLOSE, with its sid: a server it reaches
    takes it as a client's, logs nothing and ends the session (a POST without a sid
    is an error in python-engineio's log)."""
    plain = given if not given.secure else given.with_scheme("http")
    try:
        reply = transport.request(plain, "POST", plain.eio_path + polling_query(sid),
                                  {"Content-Type": "text/plain;charset=UTF-8"},
                                  packets.CLOSE.encode(), timeout=min(timeout, POST_PROBE_TIMEOUT))
    except ProbeError:
        close_session(transport, landed, sid, timeout)
        return (f"{plain.origin} not served" if given.secure else ""), None
    if reply.status != 200:
        close_session(transport, landed, sid, timeout)
    location = reply.header("location")
    if reply.status in METHOD_CHANGING_REDIRECTS:
        given_plain = not given.secure
        return "", Problem(
            FAIL if given_plain else WARN,
            f"POST {plain.url('/socket.io/')} answered {reply.status} → {location or '?'}: "
            "the method changes to GET, so polling's POSTs never arrive",
            f"give clients {origin_of(location) or 'the final https:// URL'} directly"
            + ("" if given_plain else " (never the http:// one)")
            + ", or have the front redirect with 307/308, which keep the method")
    if reply.status in REDIRECTS:
        return f"POST to http:// is redirected with {reply.status} (method kept)", None
    return "", None


def close_session(transport: Transport, target: Target, sid: str | None,
                  timeout: float) -> None:
    """A courtesy CLOSE for the reachability session, where it was opened."""
    if not sid:
        return
    try:
        transport.request(target, "POST", target.eio_path + polling_query(sid),
                          {"Content-Type": "text/plain;charset=UTF-8"}, packets.CLOSE.encode(),
                          timeout=min(timeout, POST_PROBE_TIMEOUT))
    except ProbeError:
        pass
