"""Split sessions: every request of a polling session must reach the process that
issued its sid.

Several replicas (Railway's balancer is not sticky), a round-robin proxy, or
several servers on one port (SO_REUSEPORT) send a session's requests to
processes that never heard of it; python-engineio answers those ``400 Invalid
session``. Without this check the symptom looks like a proxy dropping the
WebSocket upgrade, which is what later checks would otherwise conclude.

A WebSocket-only server has no polling sessions: each session lives on the one
connection that opened it, wherever the balancer sent it, so nothing can split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from utils.doctor import packets
from utils.doctor.advice import SPLIT_CAUSE, SPLIT_FIX, websocket_only
from utils.doctor.model import FAIL, PASS, SKIP, WARN, Context, Facts, Result
from utils.doctor.probe import InvalidSession, Polling
from utils.doctor.transport import ProbeError

SESSIONS = 8  # sessions opened, each polled with its own sid
HELD, SPLIT, UNJUDGED = "held", "split", "unjudged"

STICKY_FIX = ("in the page: io(url, {withCredentials: true}) so the cookie is sent (Safari "
              "still drops it cross-site); or SOCKETIO_TRANSPORTS=websocket with REDIS_URL, "
              "which needs no stickiness")


@dataclass(frozen=True)
class Outcome:
    """What one session's polls found: HELD, SPLIT or UNJUDGED, and why."""

    verdict: str
    detail: str = ""


def probe_session(ctx: Context, send_cookie: bool) -> Outcome:
    """Open a session, then poll it twice with its sid: a PONG (which any client may
    send, and which no server answers), then its CLOSE."""
    session = Polling(ctx.transport, ctx.target, ctx.timeout, ctx.origin,
                      send_cookie=send_cookie)
    try:
        session.open()
    except ProbeError as exc:
        return Outcome(UNJUDGED, f"a new session: {exc}")
    try:
        session.send(packets.PONG)
        session.send(packets.CLOSE)
    except InvalidSession as exc:
        session.close()  # a courtesy: it may reach the process that holds the session
        return Outcome(SPLIT, str(exc))
    except ProbeError as exc:
        return Outcome(UNJUDGED, str(exc))
    return Outcome(HELD)


def probe_sessions(ctx: Context, send_cookie: bool) -> list[Outcome]:
    return [probe_session(ctx, send_cookie) for _ in range(SESSIONS)]


def check(ctx: Context) -> Result:
    if ctx.websocket_only:
        return Result(SKIP, websocket_only(ctx.facts.transports_from, "no polling sessions "
                                           "to split: each session lives on the one "
                                           "connection that opened it"),
                      facts=Facts(split=False))
    outcomes = probe_sessions(ctx, send_cookie=False)
    counts = Counter(o.verdict for o in outcomes)
    if counts[SPLIT] and ctx.facts.cookie:
        with_cookie = Counter(o.verdict for o in probe_sessions(ctx, send_cookie=True))
        if with_cookie[HELD] and not with_cookie[SPLIT]:
            return held_by_cookie(counts[SPLIT], ctx.facts.cookie)
    if counts[SPLIT]:
        return Result(FAIL, f"{counts[SPLIT]} of {SESSIONS} sessions answered 400 Invalid "
                      f"session by the URL that issued them: {SPLIT_CAUSE}", SPLIT_FIX,
                      {"split": counts[SPLIT], "sessions": SESSIONS}, Facts(split=True))
    unjudged = [o.detail for o in outcomes if o.verdict == UNJUDGED]
    if not counts[HELD]:
        return Result(SKIP, f"no session could be polled: {unjudged[0]}",
                      "see the polling handshake check", facts=Facts(split=False))
    if unjudged:
        return Result(WARN, f"{counts[HELD]} of {SESSIONS} sessions held; {len(unjudged)} "
                      f"could not be polled: {unjudged[0]}",
                      "run the doctor again; if it persists, read the server's logs",
                      {"held": counts[HELD], "sessions": SESSIONS}, Facts(split=False))
    return Result(PASS, f"{SESSIONS} of {SESSIONS} sessions held: each poll reached the "
                  "process that issued its sid", data={"held": SESSIONS, "sessions": SESSIONS},
                  facts=Facts(split=False))


def held_by_cookie(split: int, cookie: str) -> Result:
    return Result(WARN, f"{split} of {SESSIONS} sessions answered 400 Invalid session without "
                  f"the cookie {cookie} the handshake sets, none with it: a sticky proxy "
                  "routes on the cookie, so a client that does not send it splits its "
                  "sessions (socket.io-client sends it cross-origin only with "
                  "withCredentials)", STICKY_FIX,
                  {"split_without_cookie": split, "sessions": SESSIONS}, Facts(split=False))
