"""WebSocket: a direct WebSocket opens, carries a Socket.IO connect, and leaves the
server free for other requests; and what it negotiated (compression). On a
WebSocket-only server it also judges the open packet's ping values and maxPayload,
which the skipped polling handshake would have."""

from __future__ import annotations

from utils.doctor.advice import (
    PROXY_FIX,
    SPLIT_CAUSE,
    SPLIT_FIX,
    SYNC_WORKER,
    WORKER_FIX,
    websocket_fix,
)
from utils.doctor.checks.concurrency import healthz_seconds
from utils.doctor.checks.handshake import describe_timing, judge_timing
from utils.doctor.model import FAIL, PASS, SKIP, WARN, Context, Facts, Result
from utils.doctor.probe import (
    INVALID_SESSION,
    cookie_pair,
    open_websocket_session,
    sio_connect,
)
from utils.doctor.target import Target
from utils.doctor.transport import ProbeError, Reply, WebSocket, WsRefused
from utils.doctor.units import ms

WELCOME_WAIT = 0.5  # seconds
HELD_WAIT = 2.0  # seconds GET /healthz may take while the WebSocket is open
UPGRADE_REFUSED = (400, 426)  # what Engine.IO answers an upgrade request without Upgrade


def check(ctx: Context) -> Result:
    url = ctx.target.ws_url(ctx.target.eio_path)
    ws: WebSocket | None = None
    try:
        ws, engine, info = open_websocket_session(
            ctx.transport, ctx.target, ctx.timeout, {"Origin": ctx.origin} if ctx.origin else {})
        outcome = sio_connect(engine, ctx.auth(), ctx.timeout, WELCOME_WAIT)
        wait = min(ctx.timeout, HELD_WAIT)
        held = healthz_seconds(ctx, wait) is None
    except WsRefused as exc:
        return Result(FAIL, *refusal(ctx.target, ctx.websocket_offered(), exc.reply))
    except ProbeError as exc:
        learned = Facts(deflate=ws.extensions) if ws else Facts()
        return Result(FAIL, f"{url}: {exc}", websocket_fix(ctx.target), facts=learned)
    finally:
        if ws:
            ws.close()
    learned = Facts(deflate=ws.extensions)
    if ctx.facts.cookie is None:  # no polling handshake said: the 101 may set one
        learned = Facts(deflate=ws.extensions,
                        cookie=cookie_pair(ws.reply.header("set-cookie")).split("=")[0])
    if held:
        return Result(FAIL, f"{url} opened, but while it was open GET /healthz got no answer "
                      f"for {wait:g} s: the socket holds the only worker, so WebSocket is "
                      f"unusable; {SYNC_WORKER}", WORKER_FIX, facts=learned)
    who = f" as {outcome.welcome.get('user_id')}" if outcome.welcome else ""
    said = (f"connected{who}" if outcome.accepted
            else f"answered (refused: {outcome.code or outcome.message})")
    evidence = f"{url}: 101 in {ms(ws.reply.elapsed)}, Socket.IO {said} over it"
    if not ctx.websocket_only:
        return Result(PASS, evidence, facts=learned)
    # The polling handshake was skipped: the same values, from this open packet.
    status, problem, fix = judge_timing(info)
    return Result(status, f"{evidence}; {describe_timing(info)}"
                  + (f": {problem}" if problem else ""), fix, info, learned)


def refusal(target: Target, offered: bool, reply: Reply) -> tuple[str, str]:
    """(evidence, fix) for a WebSocket request answered with something other than 101;
    ``offered``: the server is known to serve WebSocket."""
    body = reply.text()[:80].strip()
    who = reply.server_name()
    evidence = (f"{target.ws_url(target.eio_path)} {reply.status} {reply.reason} instead of "
                "101" + (f" (from {who})" if who else "") + (f": {body}" if body else ""))
    if INVALID_SESSION in body:
        return f"{evidence}; {SPLIT_CAUSE}", SPLIT_FIX
    if reply.status == 400 and "origin" in body.lower():
        return evidence, "see the CORS check"
    if "invalid websocket upgrade" in body.lower() or (offered and
                                                        reply.status in UPGRADE_REFUSED):
        proxy = f"the proxy in front ({who})" if who else "a proxy in front"
        return f"{evidence}; the Upgrade header did not reach the app: {proxy} drops it", \
            PROXY_FIX
    if not offered:
        return f"{evidence}; the server offers no WebSocket", WORKER_FIX
    return evidence, websocket_fix(target)


def check_compression(ctx: Context) -> Result:
    negotiated = ctx.facts.deflate
    if negotiated is None:
        return Result(SKIP, "no WebSocket to inspect")
    if negotiated:
        return Result(WARN, f"permessage-deflate negotiated ({negotiated}): Safari has shipped "
                      "bugs with compressed WebSocket frames",
                      "strip Sec-WebSocket-Extensions before Engine.IO sees it (this backend's "
                      "NoWebSocketCompression middleware does)", {"extensions": negotiated})
    return Result(PASS, "permessage-deflate offered, not negotiated")
