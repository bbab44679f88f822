"""Safari: nothing may rely on what Safari drops or mishandles (third-party
cookies, headers on WebSocket, compressed frames)."""

from __future__ import annotations

from utils.doctor.checks.auth import connect_once
from utils.doctor.model import PASS, WARN, Context, Result
from utils.doctor.transport import ProbeError

ADVICE = ("in the page: io(URL, {auth: {token}}); extraHeaders never reaches the server over "
          "WebSocket, and Safari sends no third-party cookies")
HEADER_WELCOME_WAIT = 0.2  # seconds


def check(ctx: Context) -> Result:
    notes: list[str] = []
    if ctx.facts.cookie:
        notes.append(f"the {handshake(ctx)} sets a cookie ({ctx.facts.cookie}): Safari drops it "
                     "cross-site, so nothing may rely on it (sticky sessions by cookie break)")
    if ctx.facts.token_in_payload is False and token_works_in_header(ctx):
        notes.append("the token is accepted in an Authorization header but not in the auth "
                     "payload: on WebSocket browsers cannot send headers")
    if ctx.facts.deflate:
        notes.append("permessage-deflate is negotiated (see compression)")
    if notes:
        return Result(WARN, "; ".join(notes), ADVICE)
    payload = "; the token is read from the auth payload" if ctx.facts.token_in_payload else ""
    return Result(PASS, f"no cookie set by the {handshake(ctx)}{payload}", ADVICE)


def handshake(ctx: Context) -> str:
    return "WebSocket handshake" if ctx.websocket_only else "handshake"


def token_works_in_header(ctx: Context) -> bool:
    try:
        return connect_once(ctx, None, HEADER_WELCOME_WAIT,
                            {"Authorization": f"Bearer {ctx.options.token}"}).accepted
    except ProbeError:
        return False
