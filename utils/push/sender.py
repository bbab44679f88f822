"""Sending one push: the payload cut to fit, aes128gcm (RFC 8291, with http_ece),
VAPID (RFC 8292, with py_vapid), and what the push service's answer means (RFC 8030).
The POST itself goes through utils/push/http.py, which trusts nothing about the
endpoint: pywebpush could not do that (it posts with requests, follows redirects,
keeps cookies and always reads ``resp.text``, inflating whatever comes).

Nothing here logs an endpoint: its path is the secret that lets anyone push to that
browser. Logs name the endpoint's origin.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from utils.config.vapid import exact_b64url, load_private_key
from utils.push.http import Client, NoAnswer, Refused, names_loopback, parse_endpoint
from utils.push.subscriptions import allowlist_entry

log = logging.getLogger(__name__)

# Push services take at most 4,096 bytes of encrypted body. aes128gcm adds 103 to the
# plaintext: a 86-byte header (salt, record size, key id length, the 65-byte key),
# a 16-byte tag and the 1-byte padding delimiter.
MAX_PLAINTEXT = 4096 - 103
SEND_TIMEOUT = 10.0  # the whole send: connect, TLS, request and answer
# A VAPID JWT may live up to 24 h; one is signed per push-service origin and reused
# for 11 of the 12 h it is valid.
VAPID_LIFETIME = 12 * 3600
VAPID_REUSE = 11 * 3600
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


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


def payload(notification: dict[str, Any], keep: str = "") -> bytes:
    """The notification as JSON, cut to fit: when too long, ``data`` is dropped, the
    body shortened, and ``"truncated": true`` added. ``keep``, when the body ends with
    it (a collapsed push's "and 19 more" line), stays whole: what is before it is cut."""
    encoded = _dumps(notification)
    if len(encoded) <= MAX_PLAINTEXT:
        return encoded
    cut = {**notification, "data": {}, "truncated": True}
    whole = cut.get("body") or ""
    tail = keep if keep and whole.endswith(keep) else ""
    body = whole[:len(whole) - len(tail)].encode()
    while True:
        encoded = _dumps(cut)
        over = len(encoded) - MAX_PLAINTEXT
        if over <= 0 or not body:
            return encoded
        body = body[:max(len(body) - over - 3, 0)]  # 3: the ellipsis's UTF-8
        text = body.decode(errors="ignore")  # a character cut in half goes
        cut["body"] = (text + "…" if text else "") + tail


def collapse_topic(key: str) -> str:
    """The Web Push ``Topic`` (RFC 8030: at most 32 base64url characters) for a
    collapse_key: the key itself when it is one, else 32 characters of base64url of its
    SHA-256. A push service replaces a push still pending with the same topic."""
    if _TOPIC.fullmatch(key):
        return key
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).decode()[:32]


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


def encrypt(body: bytes, p256dh: str, auth: str) -> bytes:
    """``body`` as aes128gcm for the browser's keys, with a fresh key and salt each
    time; ValueError when the stored keys are not a browser's."""
    receiver = exact_b64url(p256dh, 65)
    secret = exact_b64url(auth, 16)
    try:
        return http_ece.encrypt(body, private_key=ec.generate_private_key(ec.SECP256R1()),
                                dh=receiver, auth_secret=secret, version="aes128gcm")
    except http_ece.ECEException as exc:
        raise ValueError(str(exc)) from None


class Sender:
    """Signs and sends pushes for one VAPID key; one per app."""

    def __init__(self, private_key: str, subject: str, allowed_origins: tuple[str, ...],
                 timeout: float = SEND_TIMEOUT, client: Client | None = None) -> None:
        self._vapid = Vapid02(private_key=load_private_key(private_key))
        self._subject = subject
        self._allowed = allowed_origins
        self._client = client or Client(deadline=timeout)
        self._signed: dict[str, tuple[float, str]] = {}

    @property
    def deadline(self) -> float:
        """The longest one send may take."""
        return self._client.deadline

    def send(self, target: Target, body: bytes, ttl: int, urgency: str | None = None,
             topic: str | None = None) -> Answer:
        try:
            endpoint = parse_endpoint(target.endpoint)
        except Refused as exc:
            # Stored before the endpoint rules of issue 20: never sent to.
            log.warning("push to subscription %s not sent: its endpoint is not plain (%s)",
                        target.id, exc)
            return Answer("failed", None)
        origin = endpoint.origin
        entry = allowlist_entry(origin, self._allowed)
        if entry is None:
            # Stored before WEB_PUSH_ENDPOINT_ORIGINS changed: never sent to.
            log.warning("push to %s not sent: not in WEB_PUSH_ENDPOINT_ORIGINS", origin)
            return Answer("failed", None)
        try:
            encrypted = encrypt(body, target.p256dh, target.auth)
        except ValueError:
            log.warning("push to %s not sent: the subscription's keys are not valid", origin)
            return Answer("failed", None)
        try:
            reply = self._client.post(endpoint, self._headers(origin, ttl, urgency, topic),
                                      encrypted, allow_loopback=names_loopback(entry))
        except Refused as exc:
            log.warning("push to %s not sent: %s", origin, exc)
            return Answer("failed", None)
        except NoAnswer as exc:
            log.warning("push to %s got no answer: %s", origin, exc)
            return Answer("failed" if exc.final else "retry", None)
        outcome = classify(reply.status)
        if outcome == "failed":
            log.warning("push to %s refused with %s; given up", origin, reply.status)
        return Answer(outcome, reply.status, retry_after_seconds(reply.headers.get("retry-after")))

    def _headers(self, origin: str, ttl: int, urgency: str | None,
                 topic: str | None) -> list[tuple[str, str]]:
        # The push service reads the body only as application/octet-stream.
        headers = [("Content-Type", "application/octet-stream"),
                   ("Content-Encoding", "aes128gcm"), ("TTL", str(int(ttl))),
                   ("Authorization", self._authorization(origin))]
        if urgency:
            headers.append(("Urgency", urgency))
        if topic:
            headers.append(("Topic", topic))
        return headers

    def _authorization(self, origin: str) -> str:
        now = time.time()
        cached = self._signed.get(origin)
        if cached is None or cached[0] < now:
            claims = {"sub": self._subject, "aud": origin, "exp": int(now) + VAPID_LIFETIME}
            signed = self._vapid.sign(claims)["Authorization"]
            cached = self._signed[origin] = (now + VAPID_REUSE, signed)
        return cached[1]
