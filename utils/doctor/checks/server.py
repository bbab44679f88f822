"""Server facts: what /healthz says about the async mode, version and transports.

The transports it lists are how the doctor knows a WebSocket-only server (reachability
reads them first); ``--transports`` states them instead, and is checked against them."""

from __future__ import annotations

from typing import Any

from utils.doctor import served
from utils.doctor.advice import WORKER_FIX
from utils.doctor.model import FAIL, PASS, WARN, Context, Facts, Result
from utils.doctor.transport import ProbeError

GREEN_MODES = ("eventlet", "gevent")


def check(ctx: Context) -> Result:
    try:
        reply = ctx.transport.request(ctx.target, "GET", ctx.target.path + "/healthz",
                                      timeout=ctx.timeout)
    except ProbeError as exc:
        return Result(WARN, f"GET /healthz: {exc}",
                      "serve /healthz (this backend does) so operators can read the facts")
    body = reply.json() if reply.status == 200 else None
    if not isinstance(body, dict) or "async_mode" not in body:
        return Result(WARN, f"GET /healthz answered {reply.status} without async_mode: not "
                      "this backend, or an old version",
                      "deploy this backend's /healthz to report async mode and version")
    facts = describe(body)
    listed = served.from_healthz(body)
    learned = Facts() if ctx.facts.transports else Facts(
        transports=listed, transports_from=served.FROM_HEALTHZ if listed else None)
    mode = body.get("async_mode")
    if mode == "threading":
        return Result(FAIL, f"{facts}: threading mode (under gunicorn's sync worker: one "
                      "request at a time, no usable WebSocket)", WORKER_FIX, body, learned)
    if mode in GREEN_MODES and body.get("monkey_patched") is False:
        return Result(WARN, f"{facts}; not monkey-patched: blocking I/O stalls sockets",
                      f"start it with gunicorn --worker-class {mode} (it patches before "
                      "import)", body, learned)
    stated = ctx.options.transports
    if stated and listed and stated != listed:
        return Result(WARN, f"{facts}; --transports {served.describe(stated)} says otherwise, "
                      "and the checks judge the server as --transports states",
                      "run the doctor without --transports to judge the server as it runs, or "
                      f"set SOCKETIO_TRANSPORTS={served.describe(stated)} on every replica",
                      body, learned)
    return Result(PASS, facts, data=body, facts=learned)


def describe(body: dict[str, Any]) -> str:
    transports = ",".join(body.get("transports") or []) or "?"
    return (f"async_mode {body.get('async_mode')}, version {body.get('version', '?')}, "
            f"transports {transports}, message queue {body.get('message_queue', '?')}, "
            f"{body.get('environment', '?')}")
