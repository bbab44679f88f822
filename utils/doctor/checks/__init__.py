"""The checks, in the one order they run and are reported.

Each check is a function ``Context -> Result`` (utils/doctor/model.py); the facts a
result carries become part of the context of the checks after it. Checks that
hold a long-poll open come late: against a server that handles one request at a
time, each stalls whatever follows it.
"""

from __future__ import annotations

from collections.abc import Callable

from utils.doctor.advice import FIX_SPLIT_FIRST, NOT_JUDGED_SPLIT
from utils.doctor.checks import (
    auth,
    concurrency,
    handshake,
    origins,
    push,
    reachability,
    round_trip,
    safari,
    server,
    sessions,
    upgrade,
    websocket,
)
from utils.doctor.model import SKIP, Check, Context, Facts, Finding, Options, Result
from utils.doctor.served import FROM_FLAG
from utils.doctor.target import Target
from utils.doctor.transport import Transport

CHECKS: tuple[Check, ...] = (
    Check("reachability", "reachability", reachability.check),
    Check("server", "server facts", server.check),
    Check("push", "web push", push.check),
    Check("handshake", "polling handshake", handshake.check),
    Check("split_sessions", "split sessions", sessions.check),
    Check("cors", "CORS for --origin", origins.check_allowed),
    Check("foreign_origin", "foreign origin", origins.check_foreign),
    Check("auth", "auth with --token", auth.check_token, needs_one_process=True),
    Check("no_token", "connect without token", auth.check_no_token, needs_one_process=True),
    Check("websocket", "websocket", websocket.check),
    Check("compression", "compression", websocket.check_compression),
    Check("concurrency", "concurrency", concurrency.check, needs_one_process=True),
    Check("upgrade", "polling → websocket", upgrade.check, needs_one_process=True),
    Check("round_trip", "round trip", round_trip.check, needs_one_process=True),
    Check("safari", "Safari", safari.check),
)


def judge(check: Check, ctx: Context) -> Result:
    if check.needs_one_process and ctx.facts.split:
        return Result(SKIP, NOT_JUDGED_SPLIT, FIX_SPLIT_FIRST)
    return check.run(ctx)


def run_checks(options: Options, transport: Transport,
               progress: Callable[[str], None] = lambda _step: None,
               checks: tuple[Check, ...] = CHECKS) -> tuple[list[Finding], Target]:
    """Every check against ``options.url`` in order, and where the URL landed; stops
    after a fatal result. Raises Unreachable when nothing answers."""
    stated = Facts(transports=options.transports, transports_from=FROM_FLAG) \
        if options.transports else Facts()
    ctx = Context(options, Target.parse(options.url), transport, stated)
    findings: list[Finding] = []
    for number, check in enumerate(checks, 1):
        progress(f"[{number}/{len(checks)}] {check.title}")
        result = judge(check, ctx)
        findings.append(Finding(check.id, check.title, result))
        ctx = ctx.learn(result.facts)
        if ctx.facts.fatal:
            break
    return findings, ctx.target
