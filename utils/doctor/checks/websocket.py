"""WebSocket: a direct WebSocket opens, carries a Socket.IO connect, and leaves the
server free for other requests; and what it negotiated (compression)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from utils.doctor import packets
from utils.doctor.advice import (
    PROXY_FIX,
    SPLIT_CAUSE,
    SPLIT_FIX,
    SYNC_WORKER,
    WORKER_FIX,
    websocket_fix,
)
from utils.doctor.checks.concurrency import healthz_seconds
from utils.doctor.model import FAIL, PASS, SKIP, WARN, Context, Facts, Result
from utils.doctor.probe import INVALID_SESSION, WsEngine, sio_connect, websocket_query
from utils.doctor.target import Target
from utils.doctor.transport import ProbeError, Reply, WebSocket, WsRefused
from utils.doctor.units import ms

WELCOME_WAIT = 0.5  # seconds
HELD_WAIT = 2.0  # seconds GET /healthz may take while the WebSocket is open
UPGRADE_REFUSED = (400, 426)  # what Engine.IO answers an upgrade request without Upgrade


def check(ctx: Context) -> Result:
    url = ctx.target.ws_url(ctx.target.eio_path)
    start = time.monotonic()
    ws: WebSocket | None = None
    try:
        ws = ctx.transport.open_websocket(ctx.target, ctx.target.eio_path + websocket_query(),
                                          {"Origin": ctx.origin} if ctx.origin else {},
                                          ctx.timeout)
        engine = WsEngine(ws)
        opened = engine.recv(start + ctx.timeout)
        if packets.open_info(opened) is None:
            raise ProbeError(f"first message {opened[:40]!r} is not an Engine.IO open packet")
        outcome = sio_connect(engine, ctx.auth(), ctx.timeout, WELCOME_WAIT)
        wait = min(ctx.timeout, HELD_WAIT)
        held = healthz_seconds(ctx, wait) is None
    except WsRefused as exc:
        return Result(FAIL, *refusal(ctx.target, ctx.facts.upgrades, exc.reply))
    except ProbeError as exc:
        learned = Facts(deflate=ws.extensions) if ws else Facts()
        return Result(FAIL, f"{url}: {exc}", websocket_fix(ctx.target), facts=learned)
    finally:
        if ws:
            ws.close()
    learned = Facts(deflate=ws.extensions)
    if held:
        return Result(FAIL, f"{url} opened, but while it was open GET /healthz got no answer "
                      f"for {wait:g} s: the socket holds the only worker, so WebSocket is "
                      f"unusable; {SYNC_WORKER}", WORKER_FIX, facts=learned)
    who = f" as {outcome.welcome.get('user_id')}" if outcome.welcome else ""
    said = (f"connected{who}" if outcome.accepted
            else f"answered (refused: {outcome.code or outcome.message})")
    return Result(PASS, f"{url}: 101 in {ms(ws.reply.elapsed)}, Socket.IO {said} over it",
                  facts=learned)


def refusal(target: Target, upgrades: Iterable[str] | None, reply: Reply) -> tuple[str, str]:
    """(evidence, fix) for a WebSocket request answered with something other than 101."""
    body = reply.text()[:80].strip()
    who = reply.server_name()
    evidence = (f"{target.ws_url(target.eio_path)} {reply.status} {reply.reason} instead of "
                "101" + (f" (from {who})" if who else "") + (f": {body}" if body else ""))
    offered = "websocket" in (upgrades or ())
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
