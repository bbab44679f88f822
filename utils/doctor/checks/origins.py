"""Origins: --origin is allowed with credentials on polling and WebSocket, and a
made-up origin is refused on both."""

from __future__ import annotations

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


def check_allowed(ctx: Context) -> Result:
    origin = ctx.origin
    if not origin:
        return Result(SKIP, "no --origin given",
                      "pass --origin https://your-front-end to check it is allowed")
    reply, refused = handshake_reply(ctx, origin)
    if reply is None:
        return Result(FAIL, f"handshake with Origin {origin}: {refused}",
                      "check the URL and the server's logs")
    if refused is not None or reply.header("access-control-allow-origin") != origin:
        return Result(FAIL, f"Origin {origin} refused on polling ({reply.status} "
                      f"{reply.text()[:60].strip()})",
                      f"add it to FRONTEND_URLS on the server: FRONTEND_URLS={origin} (comma-"
                      "separated with the origins already there)", {"origin": origin})
    if reply.header("access-control-allow-credentials").lower() != "true":
        return Result(WARN, f"{origin} echoed without Access-Control-Allow-Credentials: true",
                      "set cors_credentials=True (clients with withCredentials fail)")
    answer = websocket_answer(ctx, origin)
    # Engine.IO names the origin in its refusal; other refusals are for other checks.
    if isinstance(answer, WsRefused) and b"origin" in answer.reply.body.lower():
        return Result(FAIL, f"{origin} allowed on polling but refused "
                      f"({answer.reply.status}) on WebSocket",
                      f"FRONTEND_URLS={origin}; the same origin policy must cover WebSocket")
    return Result(PASS, f"{origin} echoed with Access-Control-Allow-Credentials: true; "
                  "WebSocket accepted it too", data={"origin": origin})


def check_foreign(ctx: Context) -> Result:
    reply, _refused = handshake_reply(ctx, FOREIGN_ORIGIN)
    echoed = reply.header("access-control-allow-origin") if reply else ""
    polling_open = bool(reply and reply.status == 200 and echoed in (FOREIGN_ORIGIN, ANY_ORIGIN))
    ws_open = isinstance(websocket_answer(ctx, FOREIGN_ORIGIN), Reply)
    if not (polling_open or ws_open):
        status = reply.status if reply else "no answer"
        return Result(PASS, f"made-up origin {FOREIGN_ORIGIN} refused on polling ({status}) "
                      "and on WebSocket")
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
