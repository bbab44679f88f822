"""Auth: a connect with --token is accepted as its user, one without a token is refused.

Each connect goes over a new session of the transport the server's clients start
with: polling, or a WebSocket on a WebSocket-only server."""

from __future__ import annotations

import json
from typing import Any

from utils.doctor.claims import decode_claims, describe_claims, seconds_left
from utils.doctor.model import FAIL, PASS, SKIP, WARN, Context, Facts, Result
from utils.doctor.probe import (
    WELCOME_WAIT,
    Connect,
    Polling,
    open_websocket_session,
    sio_connect,
)
from utils.doctor.transport import ProbeError
from utils.doctor.units import ms

EXPIRY_WARN_SECONDS = 300
NO_TOKEN_WELCOME_WAIT = 0.3  # seconds: a refused connect has no welcome to wait for


def connect_once(ctx: Context, auth: dict[str, Any] | None, welcome_wait: float = WELCOME_WAIT,
                 headers: dict[str, str] | None = None) -> Connect:
    """A Socket.IO CONNECT over a new session (``ctx.session_transport``), closed after;
    raises ProbeError."""
    if ctx.websocket_only:
        sent = {**(headers or {}), **({"Origin": ctx.origin} if ctx.origin else {})}
        ws, engine, _info = open_websocket_session(ctx.transport, ctx.target, ctx.timeout, sent)
        try:
            return sio_connect(engine, auth, ctx.timeout, welcome_wait)
        finally:
            ws.close()
    session = Polling(ctx.transport, ctx.target, ctx.timeout, ctx.origin, headers)
    try:
        session.open()
        return sio_connect(session, auth, ctx.timeout, welcome_wait)
    finally:
        session.close()


def check_token(ctx: Context) -> Result:
    if not ctx.options.token:
        return Result(SKIP, "no --token given",
                      "pass --token <a user's JWT> to check a real connect")
    claims = decode_claims(ctx.options.token)
    shown = describe_claims(claims)
    try:
        outcome = connect_once(ctx, ctx.auth())
    except ProbeError as exc:
        return Result(FAIL, f"connect with the token over {ctx.session_transport}: {exc}; "
                      f"token {shown}", see_also(ctx))
    if not outcome.accepted:
        return Result(FAIL, f"connect with the token refused: {outcome.message} "
                      f"({outcome.code}); token {shown}", token_fix(outcome.code, claims),
                      facts=Facts(token_in_payload=False))
    welcome = outcome.welcome or {}
    if "user_id" not in welcome:
        return Result(WARN, f"connected in {ms(outcome.elapsed)} but no auth_success arrived; "
                      f"token {shown}", "the server should emit auth_success {user_id, "
                      "unread_count} on connect (CONTRACT §4)",
                      facts=Facts(token_in_payload=True))
    user_id = str(welcome["user_id"])
    left = seconds_left(claims)
    expiring = left is not None and left < EXPIRY_WARN_SECONDS
    return Result(WARN if expiring else PASS,
                  f"connected as user {user_id}, unread {welcome.get('unread_count')} "
                  f"({ms(outcome.elapsed)}); token {shown}",
                  "mint a fresh token: this one expires within 5 minutes" if expiring else "",
                  {"user_id": user_id, "unread_count": welcome.get("unread_count")},
                  Facts(user_id=user_id, token_in_payload=True))


def see_also(ctx: Context) -> str:
    return ("see the websocket and CORS checks" if ctx.websocket_only
            else "see the handshake and CORS checks")


def token_fix(code: str | None, claims: dict[str, Any]) -> str:
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


def check_no_token(ctx: Context) -> Result:
    try:
        outcome = connect_once(ctx, None, NO_TOKEN_WELCOME_WAIT)
    except ProbeError as exc:
        return Result(FAIL, f"connect without a token over {ctx.session_transport}: {exc}",
                      see_also(ctx))
    if outcome.accepted:
        return Result(FAIL, "a socket with no token was accepted: unauthenticated sockets "
                      "accepted", "refuse connects without a valid token: raise "
                      "ConnectionRefusedError('unauthorized', {'code': 'token_missing'}) in "
                      "the connect handler")
    if outcome.code == "token_missing":
        return Result(PASS, f"refused: {outcome.message} (token_missing)")
    return Result(WARN, f"refused, but as {outcome.message} ({outcome.code}), not "
                  "token_missing", "answer a missing token with the contract's code "
                  "token_missing so clients can tell it apart")
