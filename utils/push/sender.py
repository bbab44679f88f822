"""Sending one push: the payload cut to fit, VAPID, aes128gcm, and what the push
service's answer means (RFC 8030, RFC 8291, RFC 8292), through pywebpush.

Nothing here logs an endpoint: its path is the secret that lets anyone push to that
browser. Logs name the endpoint's origin.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from py_vapid import Vapid02
from pywebpush import WebPusher

from utils.push.keys import load_private_key
from utils.push.subscriptions import endpoint_origin, origin_allowed

log = logging.getLogger(__name__)

# Push services take at most 4,096 bytes of encrypted body. aes128gcm adds 103 to the
# plaintext: a 86-byte header (salt, record size, key id length, the 65-byte key),
# a 16-byte tag and the 1-byte padding delimiter.
MAX_PLAINTEXT = 4096 - 103
SEND_TIMEOUT = 10.0
# A VAPID JWT may live up to 24 h; one is signed per push-service origin and reused
# for 11 of the 12 h it is valid.
VAPID_LIFETIME = 12 * 3600
VAPID_REUSE = 11 * 3600


@dataclass(frozen=True)
class Target:
    """Where one push goes: a subscription's id, endpoint and keys."""

    id: int
    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True)
class Answer:
    """The push service's answer: ``outcome`` is sent, removed (404/410: the
    subscription is gone), retry (429, 5xx, no answer) or failed (anything else)."""

    outcome: str
    status: int | None
    retry_after: float | None = None


def payload(notification: dict[str, Any]) -> bytes:
    """The notification as JSON, cut to fit: when too long, ``data`` is dropped, the
    body shortened, and ``"truncated": true`` added."""
    encoded = _dumps(notification)
    if len(encoded) <= MAX_PLAINTEXT:
        return encoded
    cut = {**notification, "data": {}, "truncated": True}
    body = (cut.get("body") or "").encode()
    while True:
        encoded = _dumps(cut)
        over = len(encoded) - MAX_PLAINTEXT
        if over <= 0 or not body:
            return encoded
        body = body[:max(len(body) - over - 3, 0)]  # 3: the ellipsis's UTF-8
        text = body.decode(errors="ignore")  # a character cut in half goes
        cut["body"] = text + "…" if text else ""


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def classify(status: int) -> str:
    if status in (200, 201, 202):
        return "sent"
    if status in (404, 410):
        return "removed"
    if status == 429 or status >= 500:
        return "retry"
    return "failed"


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header, in seconds or as an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class Sender:
    """Signs and sends pushes for one VAPID key; one per app."""

    def __init__(self, private_key: str, subject: str, allowed_origins: tuple[str, ...],
                 timeout: float = SEND_TIMEOUT) -> None:
        self._vapid = Vapid02(private_key=load_private_key(private_key))
        self._subject = subject
        self._allowed = allowed_origins
        self._timeout = timeout
        self._session = requests.Session()
        self._signed: dict[str, tuple[float, dict[str, str]]] = {}

    def send(self, target: Target, body: bytes, ttl: int, urgency: str | None = None,
             topic: str | None = None) -> Answer:
        origin = endpoint_origin(target.endpoint)
        if not origin_allowed(origin, self._allowed):
            # Stored before WEB_PUSH_ENDPOINT_ORIGINS changed: never sent to.
            log.warning("push to %s not sent: not in WEB_PUSH_ENDPOINT_ORIGINS", origin)
            return Answer("failed", None)
        # The push service reads the body only as application/octet-stream.
        headers = {"Content-Type": "application/octet-stream", **self._authorization(origin)}
        if urgency:
            headers["Urgency"] = urgency
        if topic:
            headers["Topic"] = topic
        subscription = {"endpoint": target.endpoint,
                        "keys": {"p256dh": target.p256dh, "auth": target.auth}}
        try:
            response = WebPusher(subscription, requests_session=self._session).send(
                body, headers=headers, ttl=ttl, content_encoding="aes128gcm",
                timeout=self._timeout)
        except requests.RequestException as exc:
            log.warning("push to %s got no answer: %s", origin, type(exc).__name__)
            return Answer("retry", None)
        outcome = classify(response.status_code)
        if outcome == "failed":
            log.warning("push to %s refused with %s; given up", origin, response.status_code)
        return Answer(outcome, response.status_code,
                      retry_after_seconds(response.headers.get("Retry-After")))

    def _authorization(self, origin: str) -> dict[str, str]:
        now = time.time()
        cached = self._signed.get(origin)
        if cached is None or cached[0] < now:
            claims = {"sub": self._subject, "aud": origin, "exp": int(now) + VAPID_LIFETIME}
            cached = self._signed[origin] = (now + VAPID_REUSE, self._vapid.sign(claims))
        return cached[1]
