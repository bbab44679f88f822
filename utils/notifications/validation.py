"""Input validation shared by the HTTP routes, the socket events and the CLI."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import chain
from typing import Any

from utils.auth.tokens import MAX_USER_ID_LENGTH
from utils.errors import ItemsInvalid, ValidationError

MAX_RECIPIENTS = 1000
MAX_BULK = 1000  # notification objects in one bulk request
MAX_BULK_RECIPIENTS = 10_000  # rows one bulk request may store, all objects together
MAX_TYPE = 64
MAX_TITLE = 200
MAX_BODY = 2000
MAX_DATA_BYTES = 8 * 1024
MAX_DATA_DEPTH = 32  # nested objects and arrays, data itself included
MAX_PAGE = 100
DEFAULT_PAGE = 20
MAX_IDS = 1000
MAX_ID = 2**63 - 1
# "if_offline" is resolved per user at send time into "always" or "never"
# (utils/notifications/notifier.py): only auto, always and never are stored.
PUSH_MODES = ("auto", "always", "never", "if_offline")
URGENCIES = ("very-low", "low", "normal", "high")  # RFC 8030's Urgency header
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")  # RFC 8030: up to 32 base64url characters
MAX_COLLAPSE_KEY = 64
_COLLAPSE_KEY = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_COLLAPSE_KEY}}}")
MAX_COLLAPSE_TEMPLATE = 100


@dataclass(frozen=True)
class NotificationRequest:
    user_ids: list[str]
    type: str
    title: str
    body: str | None
    data: dict[str, Any]
    push: str = "auto"
    urgency: str | None = None
    topic: str | None = None
    critical: bool = False
    collapse_key: str | None = None
    collapse_template: str | None = None


def _user_id(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(f"{field} must be a string or an integer")
    text = str(value)
    if not text or len(text) > MAX_USER_ID_LENGTH:
        raise ValidationError(f"{field} must be 1 to {MAX_USER_ID_LENGTH} characters")
    _check_unicode(text, field)
    return text


def _text(body: dict, field: str, limit: int, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise ValidationError(f"{field} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string")
    if required and not value.strip():
        raise ValidationError(f"{field} must not be empty")
    if len(value) > limit:
        raise ValidationError(f"{field} must be at most {limit} characters")
    _check_unicode(value, field)
    return value


def _check_unicode(text: str, field: str) -> None:
    # JSON lets a lone surrogate through as an escape ("\ud800"); it has no UTF-8 form.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{field} must be valid Unicode (no lone surrogates)") from None
    # Nor can PostgreSQL store NUL in text: refused here on every database alike,
    # instead of a 503 on PostgreSQL only.
    if "\x00" in text:
        raise ValidationError(f"{field} must not contain NUL (\\u0000) characters")


def check_data(data: Any) -> None:
    """Refuse in a notification's ``data`` what would break its delivery: nesting
    deeper than MAX_DATA_DEPTH, NaN or Infinity (not JSON), text that is not valid
    Unicode or holds NUL. A loop with its own stack that stops at the limit, so no input can
    exhaust Python's."""
    pending = [([data], 0)]  # (container, depth): data is the one item at depth 0
    while pending:
        container, depth = pending.pop()
        if depth > MAX_DATA_DEPTH:
            raise ValidationError(f"data is nested deeper than {MAX_DATA_DEPTH} levels")
        if isinstance(container, dict):
            container = chain(container, container.values())  # keys are text too
        for value in container:
            if isinstance(value, str):
                _check_unicode(value, "data")
            elif isinstance(value, (dict, list)):
                pending.append((value, depth + 1))
            elif isinstance(value, float) and not math.isfinite(value):
                raise ValidationError("data must not contain NaN, Infinity or -Infinity")


def notification_request(body: Any) -> NotificationRequest:
    """A producer's request, checked against the contract's limits."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    if "user_id" in body and "user_ids" in body:
        raise ValidationError("send user_id or user_ids, not both")
    if "user_ids" in body:
        raw = body["user_ids"]
        if not isinstance(raw, list) or not raw:
            raise ValidationError("user_ids must be a non-empty list")
        if len(raw) > MAX_RECIPIENTS:
            raise ValidationError(f"user_ids may hold at most {MAX_RECIPIENTS} users")
        user_ids = list(dict.fromkeys(_user_id(v, "user_ids[]") for v in raw))
    elif "user_id" in body:
        user_ids = [_user_id(body["user_id"], "user_id")]
    else:
        raise ValidationError("user_id or user_ids is required")
    data = body.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError("data must be a JSON object")
    check_data(data)  # first: json.dumps below recurses once per level
    if len(json.dumps(data, separators=(",", ":"))) > MAX_DATA_BYTES:
        raise ValidationError(f"data must be at most {MAX_DATA_BYTES} bytes as JSON")
    return NotificationRequest(
        user_ids=user_ids,
        type=_text(body, "type", MAX_TYPE, True) or "",
        title=_text(body, "title", MAX_TITLE, True) or "",
        body=_text(body, "body", MAX_BODY, False),
        data=data,
        **_push_options(body),
        **_control_options(body),
    )


def bulk_request(body: Any) -> list[NotificationRequest]:
    """``{"notifications": [...]}``: 1 to MAX_BULK objects, each checked as
    notification_request checks one. All or nothing: every bad object is named by its
    index in an ItemsInvalid."""
    objects = body.get("notifications") if isinstance(body, dict) else None
    if not isinstance(objects, list):
        raise ValidationError(f'send {{"notifications": [...]}}: 1 to {MAX_BULK} objects, '
                              "each what POST /api/notifications takes")
    if not objects:
        raise ValidationError("notifications must hold at least one notification")
    if len(objects) > MAX_BULK:
        raise ValidationError(f"notifications may hold at most {MAX_BULK} notifications")
    requests: list[NotificationRequest] = []
    bad: list[dict[str, Any]] = []
    for index, item in enumerate(objects):
        try:
            if not isinstance(item, dict):
                raise ValidationError("each notification must be a JSON object")
            requests.append(notification_request(item))
        except ValidationError as exc:
            bad.append({"index": index, "code": exc.code, "message": exc.message})
    if bad:
        first = bad[0]
        raise ItemsInvalid(
            f"{len(bad)} of {len(objects)} notifications are invalid and none was stored; "
            f"notifications[{first['index']}]: {first['message']}", bad)
    rows = sum(len(r.user_ids) for r in requests)
    if rows > MAX_BULK_RECIPIENTS:
        raise ValidationError(f"the notifications have {rows} recipients in all; a bulk "
                              f"request may have at most {MAX_BULK_RECIPIENTS}")
    return requests


def _push_options(body: dict) -> dict[str, str | None]:
    push = body.get("push")
    if push is None:
        push = "auto"
    if push not in PUSH_MODES:
        raise ValidationError("push must be auto, always, never or if_offline")
    urgency = body.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        raise ValidationError(f"urgency must be {', '.join(URGENCIES)}")
    topic = body.get("topic")
    if topic is not None and not (isinstance(topic, str) and _TOPIC.fullmatch(topic)):
        raise ValidationError("topic must be 1 to 32 characters of A-Z a-z 0-9 - _")
    return {"push": push, "urgency": urgency, "topic": topic}


def _control_options(body: dict) -> dict[str, Any]:
    """Issue 23: ``critical`` (preferences and quiet hours cannot hold it back), and a
    ``collapse_key`` whose pushes fold into one, with the folded push's template."""
    critical = body.get("critical", False)
    if not isinstance(critical, bool):
        raise ValidationError("critical must be true or false")
    key = body.get("collapse_key")
    if key is not None and not (isinstance(key, str) and _COLLAPSE_KEY.fullmatch(key)):
        raise ValidationError(f"collapse_key must be 1 to {MAX_COLLAPSE_KEY} characters of "
                              "A-Z a-z 0-9 _ - . :")
    template = _text(body, "collapse_template", MAX_COLLAPSE_TEMPLATE, False)
    if template is not None:
        if key is None:
            raise ValidationError("collapse_template needs a collapse_key")
        if "{count}" not in template:
            raise ValidationError('collapse_template must contain "{count}", the number of '
                                  "notifications folded in")
    return {"critical": critical, "collapse_key": key, "collapse_template": template}


def positive_id(value: Any, field: str, allow_zero: bool = False) -> int:
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            raise ValidationError(f"{field} must be an integer")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer")
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_ID:
        raise ValidationError(f"{field} must be between {low} and {MAX_ID}")
    return value


def page_limit(value: Any, default: int = DEFAULT_PAGE) -> int:
    if value is None or value == "":
        return default
    limit = positive_id(value, "limit")
    if limit > MAX_PAGE:
        raise ValidationError(f"limit must be at most {MAX_PAGE}")
    return limit


def delivered_request(body: Any) -> list[int]:
    """A receipt: ``{"ids": [...]}``, 1 to MAX_IDS ids."""
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids:
        raise ValidationError('send {"ids": [<id>, ...]}')
    if len(ids) > MAX_IDS:
        raise ValidationError(f"ids may hold at most {MAX_IDS} ids")
    return list(dict.fromkeys(positive_id(i, "ids[]") for i in ids))


def read_request(body: Any) -> list[int] | None:
    """``{"ids": [...]}`` or ``{"all": true}``; None means all."""
    if not isinstance(body, dict):
        raise ValidationError("send {\"ids\": [...]} or {\"all\": true}")
    if body.get("all") is True and "ids" not in body:
        return None
    ids = body.get("ids")
    if "all" in body or not isinstance(ids, list):
        raise ValidationError("send {\"ids\": [...]} or {\"all\": true}")
    if len(ids) > MAX_IDS:
        raise ValidationError(f"ids may hold at most {MAX_IDS} ids")
    return [positive_id(i, "ids[]") for i in ids]
