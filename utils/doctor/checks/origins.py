"""Origins: --origin is allowed with credentials on polling and WebSocket, and a
made-up origin is refused on both; on WebSocket alone when the server serves no
polling (it refuses every polling request, whatever its origin)."""

from __future__ import annotations

from typing import TypeGuard

from utils.doctor import served
from utils.doctor.model import FAIL, PASS, SKIP, WARN, Context, Result
from utils.doctor.probe import Polling, websocket_query
from utils.doctor.transport import ProbeError, Reply, WsRefused

FOREIGN_ORIGIN = "https://doctor-probe.invalid"
ANY_ORIGIN = "*"


def handshake_reply(ctx: Context, origin: str) -> tuple[Reply | None, ProbeError | None]:
    """The polling handshake's answer with ``origin``, and why it was refused."""
    session = Polling(ctx.transport, ctx.target, ctx.timeout, origin)
    try:
        session.open()
        refused = None
    except ProbeError as exc:
        refused = exc
    finally:
        session.close()
    return session.handshake, refused


def websocket_answer(ctx: Context, origin: str) -> Reply | ProbeError:
    """The 101 for a WebSocket from ``origin``, or what refused it."""
    try:
        ws = ctx.transport.open_websocket(ctx.target, ctx.target.eio_path + websocket_query(),
                                          {"Origin": origin}, ctx.timeout)
    except ProbeError as exc:
        return exc
    ws.close()
    return ws.reply


def origin_fix(origin: str) -> str:
    return (f"add it to FRONTEND_URLS on the server: FRONTEND_URLS={origin} (comma-separated "
            "with the origins already there)")


def refused_for_origin(answer: Reply | ProbeError) -> TypeGuard[WsRefused]:
    """Engine.IO names the origin in its refusal; other refusals are for other checks."""
    return isinstance(answer, WsRefused) and b"origin" in answer.reply.body.lower()


def check_allowed(ctx: Context) -> Result:
    origin = ctx.origin
    if not origin:
        return Result(SKIP, "no --origin given",
                      "pass --origin https://your-front-end to check it is allowed")
    if ctx.websocket_only:
        return allowed_on_websocket(ctx, origin)
    reply, refused = handshake_reply(ctx, origin)
    if reply is None:
        return Result(FAIL, f"handshake with Origin {origin}: {refused}",
                      "check the URL and the server's logs")
    if served.refuses_polling(reply):
        return Result(FAIL, f"handshake with Origin {origin}: {reply.status} "
                      f"{reply.text()[:60].strip()}, whatever the origin: the server refuses "
                      "polling", "see the polling handshake check", {"origin": origin})
    if refused is not None or reply.header("access-control-allow-origin") != origin:
        return Result(FAIL, f"Origin {origin} refused on polling ({reply.status} "
                      f"{reply.text()[:60].strip()})", origin_fix(origin), {"origin": origin})
    if reply.header("access-control-allow-credentials").lower() != "true":
        return Result(WARN, f"{origin} echoed without Access-Control-Allow-Credentials: true",
                      "set cors_credentials=True (clients with withCredentials fail)")
    answer = websocket_answer(ctx, origin)
    if refused_for_origin(answer):
        return Result(FAIL, f"{origin} allowed on polling but refused "
                      f"({answer.reply.status}) on WebSocket",
                      f"FRONTEND_URLS={origin}; the same origin policy must cover WebSocket")
    return Result(PASS, f"{origin} echoed with Access-Control-Allow-Credentials: true; "
                  "WebSocket accepted it too", data={"origin": origin})


def allowed_on_websocket(ctx: Context, origin: str) -> Result:
    """A WebSocket-only server: browsers apply no CORS to a WebSocket, the server's
    origin check is all there is."""
    answer = websocket_answer(ctx, origin)
    if isinstance(answer, Reply):
        return Result(PASS, f"{origin} accepted on WebSocket (101); no polling to check, "
                      "the server is WebSocket-only", data={"origin": origin})
    if refused_for_origin(answer):
        return Result(FAIL, f"Origin {origin} refused on WebSocket ({answer.reply.status} "
                      f"{answer.reply.text()[:60].strip()})", origin_fix(origin),
                      {"origin": origin})
    return Result(FAIL, f"WebSocket with Origin {origin}: {answer}", "see the websocket check",
                  {"origin": origin})


def check_foreign(ctx: Context) -> Result:
    reply = None
    if not ctx.websocket_only:
        reply, _refused = handshake_reply(ctx, FOREIGN_ORIGIN)
    echoed = reply.header("access-control-allow-origin") if reply else ""
    polling_open = bool(reply and reply.status == 200 and echoed in (FOREIGN_ORIGIN, ANY_ORIGIN))
    ws_answer = websocket_answer(ctx, FOREIGN_ORIGIN)
    ws_open = isinstance(ws_answer, Reply)
    if not (polling_open or ws_open):
        on_websocket = f" ({ws_answer.reply.status})" if isinstance(ws_answer, WsRefused) else ""
        where = (f"on WebSocket{on_websocket}; no polling to check, the server is "
                 "WebSocket-only") if ctx.websocket_only else \
            f"on polling ({reply.status if reply else 'no answer'}) and on WebSocket"
        return Result(PASS, f"made-up origin {FOREIGN_ORIGIN} refused {where}")
    where = " and ".join(w for w, hit in (("polling", polling_open), ("WebSocket", ws_open))
                         if hit)
    headers = ""
    if polling_open and reply:
        headers = (f" (Access-Control-Allow-Origin: {echoed}, credentials "
                   f"{reply.header('access-control-allow-credentials')})")
    return Result(FAIL, f"made-up origin {FOREIGN_ORIGIN} accepted on {where}{headers}: the "
                  "server echoes every origin, any site can open sockets as your users "
                  "(cross-site WebSocket hijacking)",
                  "list the exact front-end origins (FRONTEND_URLS=https://app.example.com); "
                  "never cors_allowed_origins='*'")
