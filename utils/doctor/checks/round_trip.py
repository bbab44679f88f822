"""Round trip: a notification POSTed with --api-key reaches the --token user's
sockets over polling and over WebSocket. It stores one real notification (type
``doctor``), then marks it read."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from utils.doctor import packets
from utils.doctor.advice import SYNC_WORKER, WORKER_FIX, busy_hint
from utils.doctor.model import FAIL, PASS, SKIP, Context, Result
from utils.doctor.probe import Polling, WsEngine, sio_connect, wait_event, websocket_query
from utils.doctor.transport import Background, ProbeError, ProbeTimeout, WebSocket
from utils.doctor.units import ms

CREATED = 201
WELCOME_WAIT = 0.5  # seconds
JOIN_GRACE = 0.5  # seconds the polling reader may outlast the deadline
MARK_READ_WAIT = 1.0  # seconds
TRANSPORTS = ("polling", "websocket")


class NotConnected(Exception):
    """The user's sockets could not both be connected: (evidence, fix)."""


def check(ctx: Context) -> Result:
    if not ctx.options.api_key:
        return Result(SKIP, "no --api-key given",
                      "pass --api-key $NOTIFY_API_KEY (with --token) to time a real delivery")
    user_id = ctx.facts.user_id
    if not user_id:
        return Result(SKIP, "no connected user (see the auth check)", "fix the auth check first")
    session = Polling(ctx.transport, ctx.target, ctx.timeout, ctx.origin)
    ws: WebSocket | None = None
    try:
        ws = connect_user(ctx, session)
        return deliver(ctx, user_id, session, WsEngine(ws))
    except NotConnected as exc:
        return Result(FAIL, *exc.args)
    except ProbeError as exc:
        return Result(FAIL, f"connecting user {user_id} over polling and WebSocket: {exc}"
                      + busy_hint(exc), WORKER_FIX if isinstance(exc, ProbeTimeout)
                      else "see the websocket and auth checks")
    finally:
        if ws:
            ws.close()
        session.close()


def connect_user(ctx: Context, session: Polling) -> WebSocket:
    """The token's user connected over ``session`` and over a new WebSocket (returned)."""
    session.open()
    if not sio_connect(session, ctx.auth(), ctx.timeout, WELCOME_WAIT).accepted:
        raise NotConnected("connect over polling refused", "see the auth check")
    headers = {"Origin": ctx.origin} if ctx.origin else {}
    ws = ctx.transport.open_websocket(ctx.target, ctx.target.eio_path + websocket_query(),
                                      headers, ctx.timeout)
    try:
        engine = WsEngine(ws)
        engine.recv(time.monotonic() + ctx.timeout)  # the open packet
        if not sio_connect(engine, ctx.auth(), ctx.timeout, WELCOME_WAIT).accepted:
            raise NotConnected("connect over WebSocket refused", "see the websocket check")
    except BaseException:
        ws.close()
        raise
    return ws


def deliver(ctx: Context, user_id: str, session: Polling, engine: WsEngine) -> Result:
    nonce = base64.urlsafe_b64encode(os.urandom(6)).decode()
    body = json.dumps({"user_id": user_id, "type": "doctor", "title": "doctor: round-trip check",
                       "data": {"doctor": nonce}})

    def mine(arg: Any) -> bool:
        return isinstance(arg, dict) and (arg.get("data") or {}).get("doctor") == nonce

    start = time.monotonic()
    deadline = start + ctx.timeout
    arrivals: dict[str, float] = {}

    def over_polling() -> None:
        wait_event(session, "notification", deadline, mine)
        arrivals["polling"] = time.monotonic() - start

    poller = Background(over_polling)
    try:
        reply = ctx.transport.request(
            ctx.target, "POST", ctx.target.path + "/api/notifications",
            {"Authorization": f"Bearer {ctx.options.api_key}",
             "Content-Type": "application/json"}, body.encode(), timeout=ctx.timeout)
    except ProbeTimeout:
        return Result(FAIL, f"POST /api/notifications got no answer within {ctx.timeout:g} s "
                      f"while a WebSocket was open: {SYNC_WORKER}", WORKER_FIX)
    except ProbeError as exc:
        return Result(FAIL, str(exc), "check the server's logs")
    if reply.status != CREATED:
        error = reply.json().get("error", {}) if isinstance(reply.json(), dict) else {}
        code = error.get("code", "") if isinstance(error, dict) else ""
        return Result(FAIL, f"POST /api/notifications answered {reply.status} {code}",
                      "pass the server's NOTIFY_API_KEY as --api-key"
                      if reply.status in (401, 403) else "check the server's logs")
    try:
        note: dict[str, Any] | None = wait_event(engine, "notification", deadline, mine)
        arrivals["websocket"] = time.monotonic() - start
    except ProbeError:
        note = None
    poller.join(max(0.0, deadline - time.monotonic()) + JOIN_GRACE)
    mark_read(engine, note)
    return judge(ctx, user_id, arrivals)


def judge(ctx: Context, user_id: str, arrivals: dict[str, float]) -> Result:
    timing = ", ".join(f"{t} {ms(arrivals[t])}" for t in TRANSPORTS if t in arrivals)
    missing = [t for t in TRANSPORTS if t not in arrivals]
    if missing:
        return Result(FAIL, f"notification for {user_id} not delivered over "
                      f"{' and '.join(missing)} within {ctx.timeout:g} s"
                      + (f" ({timing})" if timing else ""),
                      "run one worker per process, or set REDIS_URL when there are several",
                      dict(arrivals))
    return Result(PASS, f"POST → arrival for user {user_id}: {timing}",
                  data={f"{k}_ms": round(v * 1000, 1) for k, v in arrivals.items()})


def mark_read(engine: WsEngine, note: dict[str, Any] | None) -> None:
    """Leave the user's unread count as it was."""
    if not note or "id" not in note:
        return
    try:
        engine.send(packets.event("mark_read", {"ids": [note["id"]]}, ack=1))
        engine.recv(time.monotonic() + MARK_READ_WAIT)
    except ProbeError:
        pass
