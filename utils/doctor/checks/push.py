"""Web Push: ``GET /api/push/config`` says push is on and hands out a key browsers take.

``PushManager.subscribe({applicationServerKey})`` needs the server's VAPID public key:
base64url of a 65-byte uncompressed P-256 point. The point is checked here with the
curve's equation, so the doctor still imports nothing beyond the standard library.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from utils.doctor.model import FAIL, PASS, WARN, Context, Result
from utils.doctor.transport import ProbeError

PATH = "/api/push/config"
KEY_BYTES = 65  # 0x04 || x || y
UNCOMPRESSED = 0x04
BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# P-256 (secp256r1, FIPS 186-4 D.1.2.3): y^2 = x^3 - 3x + B over the prime field P.
P = 2**256 - 2**224 + 2**192 + 2**96 - 1
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B

ENABLE_FIX = ("to push to sleeping phones, set VAPID_PRIVATE_KEY and VAPID_SUBJECT (mailto: "
              "or https:, not localhost); `flask --app app vapid-keys` prints a pair")
KEY_FIX = ("set VAPID_PRIVATE_KEY to a P-256 key (base64url of the raw 32-byte value, as "
           "`flask --app app vapid-keys` prints, or a PEM)")
ROUTE_FIX = ("deploy a version with Web Push (GET /api/push/config); check that the URL "
             "reaches the app, not a proxy's page")


def check(ctx: Context) -> Result:
    try:
        reply = ctx.transport.request(ctx.target, "GET", ctx.target.path + PATH,
                                      timeout=ctx.timeout)
    except ProbeError as exc:
        return Result(FAIL, f"GET {PATH}: {exc}", ROUTE_FIX)
    body = reply.json()
    if reply.status == 404:
        return Result(FAIL, f"GET {PATH} answered 404: no Web Push on this server (a version "
                      "before it, or another app)", ROUTE_FIX)
    if reply.status != 200:
        return Result(FAIL, f"GET {PATH} answered {reply.status}{error_code(body)}",
                      "read the server's log for this request", data=mapping(body))
    problem = shape_problem(body)
    if problem:
        return Result(FAIL, f"GET {PATH} answered 200 with {problem}, not {{\"enabled\": "
                      "bool, \"vapid_public_key\"}", ROUTE_FIX, data=mapping(body))
    if body["enabled"] is False:
        return Result(WARN, "Web Push is off (enabled false): an iPhone with the app closed "
                      "or asleep gets nothing until it is opened again", ENABLE_FIX, data=body)
    key = body.get("vapid_public_key")
    problem = key_problem(key)
    if problem:
        return Result(FAIL, f"enabled, but vapid_public_key {problem}: browsers refuse it as "
                      "applicationServerKey", KEY_FIX, data=body)
    return Result(PASS, f"enabled; VAPID public key {key[:8]}…{key[-4:]} (a {KEY_BYTES}-byte "
                  "P-256 point)", data=body)


def shape_problem(body: Any) -> str | None:
    """What is wrong with the answer's shape, or None."""
    if body is None:
        return "a body that is not JSON"
    if not isinstance(body, dict):
        return f"JSON {type(body).__name__}"
    if not isinstance(body.get("enabled"), bool):
        return "no boolean \"enabled\""
    return None


def key_problem(key: Any) -> str | None:
    """Why ``key`` is not base64url of an uncompressed P-256 point, or None."""
    if key is None:
        return "is missing"
    if not isinstance(key, str):
        return f"is a JSON {type(key).__name__}, not a string"
    if not BASE64URL.fullmatch(key):
        return "is not base64url"
    try:
        raw = base64.urlsafe_b64decode(key.rstrip("=") + "=" * (-len(key.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return "is not base64url"
    if len(raw) != KEY_BYTES:
        return f"is {len(raw)} bytes, not {KEY_BYTES}"
    if raw[0] != UNCOMPRESSED:
        return f"starts with 0x{raw[0]:02x}, not 0x04 (an uncompressed point)"
    x, y = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
    if x >= P or y >= P or (y * y - (x * x * x - 3 * x + B)) % P:
        return "is not a point on P-256"
    return None


def error_code(body: Any) -> str:
    """`` not_found`` from the error shape, or nothing."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return f" {code}" if isinstance(code, str) else ""


def mapping(body: Any) -> dict[str, Any]:
    return body if isinstance(body, dict) else {}

