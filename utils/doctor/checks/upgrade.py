"""Polling → WebSocket: the path browsers take. A polling session, its long-poll
pending, then the upgrade of that session to a WebSocket. A WebSocket-only server's
clients open the WebSocket directly (the websocket check): nothing to upgrade."""

from __future__ import annotations

import time

from utils.doctor import packets
from utils.doctor.advice import (
    SYNC_WORKER,
    WORKER_FIX,
    busy_hint,
    websocket_fix,
    websocket_only,
)
from utils.doctor.checks.concurrency import HEAD_START
from utils.doctor.checks.websocket import refusal
from utils.doctor.model import FAIL, PASS, SKIP, Context, Result
from utils.doctor.probe import Polling, WsEngine, sio_connect, websocket_query
from utils.doctor.transport import ProbeError, ProbeTimeout, WebSocket, WsRefused
from utils.doctor.units import ms

LONG_POLL_HOLD = 30  # seconds the pending long-poll may wait, beyond --timeout
RELEASE_WAIT = 2.0  # seconds for the upgrade to release the pending long-poll
WELCOME_WAIT = 0.3  # seconds


def check(ctx: Context) -> Result:
    if ctx.websocket_only:
        return Result(SKIP, websocket_only(ctx.facts.transports_from, "clients open the "
                                           "WebSocket directly, with no polling to upgrade "
                                           "from (see websocket)"))
    session = Polling(ctx.transport, ctx.target, ctx.timeout, ctx.origin)
    try:
        session.open()
    except ProbeError as exc:
        return Result(FAIL, f"polling handshake: {exc}{busy_hint(exc)}",
                      WORKER_FIX if isinstance(exc, ProbeTimeout) else "see the handshake check")
    # As in a browser: the session's long-poll is on its way before the upgrade.
    pending = session.start_poll(ctx.timeout + LONG_POLL_HOLD)
    time.sleep(HEAD_START)
    start = time.monotonic()
    ws: WebSocket | None = None
    try:
        ws = ctx.transport.open_websocket(
            ctx.target, ctx.target.eio_path + websocket_query(session.sid),
            session.headers(), ctx.timeout)
        ws.send_text(packets.PROBE_PING)
        answer = ws.recv_text(start + ctx.timeout)
        if answer != packets.PROBE_PONG:
            raise ProbeError(f"probe answered {answer[:20]!r}, not {packets.PROBE_PONG}")
        ws.send_text(packets.UPGRADE)
        outcome = sio_connect(WsEngine(ws), ctx.auth(), ctx.timeout, WELCOME_WAIT)
    except WsRefused as exc:
        return Result(FAIL, *refusal(ctx.target, ctx.websocket_offered(), exc.reply))
    except ProbeTimeout as exc:
        return Result(FAIL, f"the upgrade got no answer within {ctx.timeout:g} s while the "
                      f"session's long-poll was pending ({exc}): WebSocket unusable, "
                      f"{SYNC_WORKER}", WORKER_FIX)
    except ProbeError as exc:
        return Result(FAIL, f"upgrade failed: {exc}", websocket_fix(ctx.target))
    finally:
        if ws:
            ws.close()
    took = time.monotonic() - start
    released = pending.join(RELEASE_WAIT)
    said = "connected" if outcome.accepted else f"answered (refused: {outcome.code})"
    return Result(PASS, f"probe answered and upgraded in {ms(took)}; the pending long-poll "
                  f"was {'released' if released else 'still held'}; Socket.IO {said} over the "
                  "upgraded socket")
