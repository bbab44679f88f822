"""Round trip: a notification POSTed with --api-key reaches the --token user's
sockets over polling and over WebSocket (over two WebSockets on a WebSocket-only
server; behind a balancer they usually reach different processes, which REDIS_URL
joins). It stores one real notification (type ``doctor``), then marks it read."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any

from utils.doctor import packets
from utils.doctor.advice import SYNC_WORKER, WORKER_FIX, busy_hint
from utils.doctor.model import FAIL, PASS, SKIP, Context, Result
from utils.doctor.probe import (
    Channel,
    Polling,
    open_websocket_session,
    sio_connect,
    wait_event,
)
from utils.doctor.transport import Background, ProbeError, ProbeTimeout
from utils.doctor.units import ms

CREATED = 201
WELCOME_WAIT = 0.5  # seconds
JOIN_GRACE = 0.5  # seconds the polling reader may outlast the deadline
MARK_READ_WAIT = 1.0  # seconds
TRANSPORTS = ("polling", "websocket")  # the user's two sockets, the first read in a thread
WEBSOCKETS = ("websocket", "second websocket")  # on a WebSocket-only server


class NotConnected(Exception):
    """The user's sockets could not both be connected: (evidence, fix)."""


def check(ctx: Context) -> Result:
    if not ctx.options.api_key:
        return Result(SKIP, "no --api-key given",
                      "pass --api-key $NOTIFY_API_KEY (with --token) to time a real delivery")
    user_id = ctx.facts.user_id
    if not user_id:
        return Result(SKIP, "no connected user (see the auth check)", "fix the auth check first")
    names = sockets(ctx)
    closers: list[Callable[[], None]] = []
    try:
        first = connect_user(ctx, names[0], closers)
        second = connect_user(ctx, names[1], closers)
        return deliver(ctx, user_id, names, first, second)
    except NotConnected as exc:
        return Result(FAIL, *exc.args)
    except ProbeError as exc:
        return Result(FAIL, f"connecting user {user_id} over {' and '.join(names)}: {exc}"
                      + busy_hint(exc), WORKER_FIX if isinstance(exc, ProbeTimeout)
                      else "see the websocket and auth checks")
    finally:
        for close in reversed(closers):
            close()


def sockets(ctx: Context) -> tuple[str, str]:
    """The user's two sockets, as this server's clients connect."""
    return WEBSOCKETS if ctx.websocket_only else TRANSPORTS


def connect_user(ctx: Context, name: str, closers: list[Callable[[], None]]) -> Channel:
    """The token's user connected over a new session (polling, or else a WebSocket); its
    closing is added to ``closers``."""
    if name == "polling":
        session = Polling(ctx.transport, ctx.target, ctx.timeout, ctx.origin)
        closers.append(session.close)
        session.open()
        channel: Channel = session
    else:
        ws, channel, _info = open_websocket_session(
            ctx.transport, ctx.target, ctx.timeout, {"Origin": ctx.origin} if ctx.origin else {})
        closers.append(ws.close)
    if not sio_connect(channel, ctx.auth(), ctx.timeout, WELCOME_WAIT).accepted:
        raise NotConnected(f"connect over {name} refused",
                           "see the auth check" if name == "polling" else "see the websocket check")
    return channel


def deliver(ctx: Context, user_id: str, names: tuple[str, str], first: Channel,
            second: Channel) -> Result:
    """POST the notification; ``first`` is read in a thread, ``second`` here."""
    nonce = base64.urlsafe_b64encode(os.urandom(6)).decode()
    body = json.dumps({"user_id": user_id, "type": "doctor", "title": "doctor: round-trip check",
                       "data": {"doctor": nonce}})

    def mine(arg: Any) -> bool:
        return isinstance(arg, dict) and (arg.get("data") or {}).get("doctor") == nonce

    start = time.monotonic()
    deadline = start + ctx.timeout
    arrivals: dict[str, float] = {}

    def over_first() -> None:
        wait_event(first, "notification", deadline, mine)
        arrivals[names[0]] = time.monotonic() - start

    reader = Background(over_first)
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
        note: dict[str, Any] | None = wait_event(second, "notification", deadline, mine)
        arrivals[names[1]] = time.monotonic() - start
    except ProbeError:
        note = None
    reader.join(max(0.0, deadline - time.monotonic()) + JOIN_GRACE)
    mark_read(second, note)
    return judge(ctx, user_id, names, arrivals)


def judge(ctx: Context, user_id: str, names: tuple[str, str],
          arrivals: dict[str, float]) -> Result:
    timing = ", ".join(f"{t} {ms(arrivals[t])}" for t in names if t in arrivals)
    missing = [t for t in names if t not in arrivals]
    if missing:
        return Result(FAIL, f"notification for {user_id} not delivered over "
                      f"{' and '.join(missing)} within {ctx.timeout:g} s"
                      + (f" ({timing})" if timing else ""),
                      "run one worker per process, or set REDIS_URL when there are several",
                      dict(arrivals))
    return Result(PASS, f"POST → arrival for user {user_id}: {timing}",
                  data={f"{k.replace(' ', '_')}_ms": round(v * 1000, 1)
                        for k, v in arrivals.items()})


def mark_read(engine: Channel, note: dict[str, Any] | None) -> None:
    """Leave the user's unread count as it was."""
    if not note or "id" not in note:
        return
    try:
        engine.send(packets.event("mark_read", {"ids": [note["id"]]}, ack=1))
        engine.recv(time.monotonic() + MARK_READ_WAIT)
    except ProbeError:
        pass
