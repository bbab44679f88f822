"""The Engine.IO polling handshake: the upgrade offered, the ping values, maxPayload.

A WebSocket-only server has none: the check is skipped, and the websocket check
judges the same values in the open packet its WebSocket receives."""

from __future__ import annotations

import json
from typing import Any

from utils.doctor import served
from utils.doctor.advice import WEBSOCKET_CLIENTS, WORKER_FIX, websocket_only
from utils.doctor.model import FAIL, PASS, SKIP, WARN, Context, Facts, Result
from utils.doctor.probe import Polling
from utils.doctor.transport import ProbeError

# Idle timeouts of common proxies and platforms: nginx proxy_read_timeout and
# AWS ALB 60 s, Heroku's router 55 s. A ping must cross the connection well before.
PROXY_IDLE_SECONDS = 55
# Browsers throttle timers in background tabs; a shorter pingTimeout drops them.
MIN_PING_TIMEOUT_SECONDS = 5
MS_PER_SECOND = 1000


def check(ctx: Context) -> Result:
    if ctx.websocket_only:
        return Result(SKIP, websocket_only(ctx.facts.transports_from, "no polling handshake "
                                           "to check (the websocket check judges its open "
                                           "packet)"), WEBSOCKET_CLIENTS)
    session = Polling(ctx.transport, ctx.target, ctx.timeout)
    try:
        info = session.open()
    except ProbeError as exc:
        where = f"GET {ctx.target.eio_path}?EIO=4&transport=polling: {exc}"
        if session.handshake and served.refuses_polling(session.handshake):
            return Result(FAIL, f"{where}: the server refuses polling, though "
                          f"{ctx.facts.transports_from or 'nothing'} says it serves it",
                          "clients must connect with io(url, {transports: ['websocket']}) "
                          "(the doctor checks it so without --transports), or set "
                          "SOCKETIO_TRANSPORTS=polling,websocket with one process or a "
                          "sticky proxy")
        return Result(FAIL, where, "the server must run Flask-SocketIO 5 / python-socketio 5 "
                      "(Engine.IO 4) at /socket.io/")
    finally:
        session.close()
    upgrades = info.get("upgrades") or []
    learned = Facts(upgrades=tuple(upgrades), cookie=session.cookie.split("=")[0])
    status, problem, fix = judge(info)
    evidence = describe(info) + (f": {problem}" if problem else "")
    return Result(status, evidence, fix, info, learned)


def judge(info: dict[str, Any]) -> tuple[str, str, str]:
    """(status, what is wrong, fix) for the handshake's values."""
    if "websocket" not in (info.get("upgrades") or []):
        return (FAIL, "no websocket upgrade offered, the signature of a sync worker or a "
                "threading server", WORKER_FIX)
    return judge_timing(info)


def judge_timing(info: dict[str, Any]) -> tuple[str, str, str]:
    """(status, what is wrong, fix) for the ping values and maxPayload of an open
    packet, over polling or WebSocket."""
    interval = (info.get("pingInterval") or 0) / MS_PER_SECOND
    timeout = (info.get("pingTimeout") or 0) / MS_PER_SECOND
    if interval >= PROXY_IDLE_SECONDS:
        return (WARN, f"a ping every {interval:g} s outlasts common proxy idle timeouts "
                "(nginx and AWS ALB 60 s, Heroku 55 s)", "PING_INTERVAL=25 (the default)")
    if timeout < MIN_PING_TIMEOUT_SECONDS:
        return (WARN, f"a {timeout:g} s pingTimeout drops throttled background tabs (Safari, "
                "mobile)", "PING_TIMEOUT=60 (the default)")
    if info.get("maxPayload") is None:
        return WARN, "an older Engine.IO server", "upgrade to python-engineio 4.x"
    return PASS, "", ""


def describe(info: dict[str, Any]) -> str:
    return (f"sid {str(info.get('sid'))[:8]}…, upgrades {json.dumps(info.get('upgrades'))}, "
            + describe_timing(info))


def describe_timing(info: dict[str, Any]) -> str:
    payload = info.get("maxPayload")
    return (f"pingInterval {(info.get('pingInterval') or 0) / MS_PER_SECOND:g} s, "
            f"pingTimeout {(info.get('pingTimeout') or 0) / MS_PER_SECOND:g} s, maxPayload "
            f"{payload if payload is not None else 'absent'}")
