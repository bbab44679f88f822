"""Concurrency: a second request is answered while a long-poll is pending (while a
WebSocket is open, on a WebSocket-only server). A server that handles one request at
a time (gunicorn's sync worker) is not."""

from __future__ import annotations

import time

from utils.doctor.advice import SYNC_WORKER, WORKER_FIX
from utils.doctor.model import FAIL, PASS, WARN, Context, Result
from utils.doctor.probe import Polling, open_websocket_session
from utils.doctor.transport import ProbeError, ProbeTimeout
from utils.doctor.units import ms

PROMPT_SECONDS = 1.0  # slower than this while a long-poll is pending: a warning
SECOND_REQUEST_WAIT = 3.0  # seconds, at most, for the second request
LONG_POLL_HOLD = 60  # seconds the pending long-poll may wait, beyond --timeout
HEAD_START = 0.1  # seconds for the long-poll to reach the server before the next request
RELEASE_WAIT = 1.0  # seconds for the closed session's long-poll to come back


def healthz_seconds(ctx: Context, wait: float) -> float | None:
    """Seconds GET /healthz took, or None when it got no answer within ``wait``."""
    try:
        return ctx.transport.request(ctx.target, "GET", ctx.target.path + "/healthz",
                                     timeout=wait).elapsed
    except ProbeTimeout:
        return None
    except ProbeError:
        return 0.0  # answered, if badly: the server check reports /healthz itself


def check(ctx: Context) -> Result:
    if ctx.websocket_only:
        return check_over_websocket(ctx)
    session = Polling(ctx.transport, ctx.target, ctx.timeout)
    try:
        session.open()
    except ProbeTimeout:
        return Result(FAIL, f"a new request got no answer within {ctx.timeout:g} s while an "
                      f"earlier long-poll was pending: {SYNC_WORKER}", WORKER_FIX)
    except ProbeError as exc:
        return Result(FAIL, f"a new session: {exc}", "see the handshake check")
    # No namespace CONNECT: the long-poll then waits for the next ping.
    pending = session.start_poll(ctx.timeout + LONG_POLL_HOLD)
    time.sleep(HEAD_START)
    wait = min(ctx.timeout, SECOND_REQUEST_WAIT)
    took = healthz_seconds(ctx, wait)
    if took is None:  # a stuck server is left alone: no close
        return Result(FAIL, f"nothing answered for {wait:g} s while one long-poll was "
                      f"pending: {SYNC_WORKER}", WORKER_FIX)
    session.close()  # answers the pending long-poll
    if took > PROMPT_SECONDS:
        return Result(WARN, f"a second request took {ms(took)} while a long-poll was pending",
                      "check the worker class and the server's load")
    pending.join(RELEASE_WAIT)
    return Result(PASS, f"GET /healthz answered in {ms(took)} while a long-poll was pending",
                  data={"elapsed_ms": round(took * 1000, 1)})


def check_over_websocket(ctx: Context) -> Result:
    """The WebSocket-only server's clients each hold a WebSocket open, for good."""
    try:
        ws, _engine, _info = open_websocket_session(
            ctx.transport, ctx.target, ctx.timeout, {"Origin": ctx.origin} if ctx.origin else {})
    except ProbeTimeout:
        return Result(FAIL, f"a new WebSocket got no answer within {ctx.timeout:g} s: "
                      f"{SYNC_WORKER}", WORKER_FIX)
    except ProbeError as exc:
        return Result(FAIL, f"a new WebSocket: {exc}", "see the websocket check")
    try:
        wait = min(ctx.timeout, SECOND_REQUEST_WAIT)
        took = healthz_seconds(ctx, wait)
    finally:
        ws.close()
    if took is None:
        return Result(FAIL, f"nothing answered for {wait:g} s while one WebSocket was open: "
                      f"{SYNC_WORKER}", WORKER_FIX)
    if took > PROMPT_SECONDS:
        return Result(WARN, f"a second request took {ms(took)} while a WebSocket was open",
                      "check the worker class and the server's load")
    return Result(PASS, f"GET /healthz answered in {ms(took)} while a WebSocket was open",
                  data={"elapsed_ms": round(took * 1000, 1)})
