"""Server facts: what /healthz says about the async mode, version and transports."""

from __future__ import annotations

from typing import Any

from utils.doctor.advice import WORKER_FIX
from utils.doctor.model import FAIL, PASS, WARN, Context, Result
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
    mode = body.get("async_mode")
    if mode == "threading":
        return Result(FAIL, f"{facts}: threading mode (under gunicorn's sync worker: one "
                      "request at a time, no usable WebSocket)", WORKER_FIX, body)
    if mode in GREEN_MODES and body.get("monkey_patched") is False:
        return Result(WARN, f"{facts}; not monkey-patched: blocking I/O stalls sockets",
                      f"start it with gunicorn --worker-class {mode} (it patches before "
                      "import)", body)
    return Result(PASS, facts, data=body)


def describe(body: dict[str, Any]) -> str:
    transports = ",".join(body.get("transports") or []) or "?"
    return (f"async_mode {body.get('async_mode')}, version {body.get('version', '?')}, "
            f"transports {transports}, message queue {body.get('message_queue', '?')}, "
            f"{body.get('environment', '?')}")
