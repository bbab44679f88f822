"""The producer client: ``POST /api/notifications`` (and its bulk form,
``POST /api/notifications/bulk``) with an Idempotency-Key, retried.

Standard library only (``urllib.request``, ``json``), so installing it brings in
nothing else. One :class:`NotifyClient` holds no connection and no mutable state:
share it between threads freely.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import random
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timezone
from email.message import Message
from typing import Any, Literal, NoReturn, TypeVar, Union
from urllib.parse import urlsplit

from .errors import (
    AuthError,
    IdempotencyConflict,
    NotifyError,
    RateLimited,
    ServerError,
    Unavailable,
    ValidationError,
)

__version__ = "0.1.0"

Push = Literal["auto", "always", "never"]
Urgency = Literal["very-low", "low", "normal", "high"]
UserId = Union[str, int]
_T = TypeVar("_T")

PATH = "/api/notifications"
BULK_PATH = "/api/notifications/bulk"
#: Statuses worth another attempt: the rate limit, and a server or gateway that is
#: briefly unable to answer (a deploy, a restart, a database failover).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: 503 codes that describe the server's configuration: retrying cannot help.
FINAL_503_CODES = frozenset({"producer_disabled", "push_disabled"})
MAX_IDEMPOTENCY_KEY = 255
_DELAY_SECONDS = re.compile(r"^\d+(\.\d+)?$")
_MAX_MESSAGE = 500

log = logging.getLogger("notify_client")


@dataclass(frozen=True)
class Sent:
    """One stored notification: its recipient and its id in the server's database."""

    user_id: str
    id: int
    #: True when the server answered with ``Idempotent-Replayed: true``: this key was
    #: stored before (by an earlier attempt of this call, or by another call with the
    #: same key and body), and nothing was stored or emitted again.
    replayed: bool = False
    #: The ``Idempotency-Key`` the request carried.
    idempotency_key: str = ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is reported, not followed: urllib would turn the POST into a GET."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Message, newurl: str) -> None:
        return None


class _Attempt:
    """What one attempt produced: an answer, or the connection error instead of one."""

    def __init__(self, status: int | None = None, headers: Message | None = None,
                 body: bytes = b"", failure: BaseException | None = None) -> None:
        self.status, self.headers, self.body, self.failure = status, headers, body, failure


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` value in seconds from ``now`` (Unix time, default the clock):
    delay-seconds (``"5"``) or an HTTP date (``"Wed, 21 Oct 2026 07:28:00 GMT"``).
    ``None`` when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.match(value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class NotifyClient:
    """Sends notifications through ``POST {base_url}/api/notifications``.

    ``timeout`` bounds each attempt (connect and answer), ``deadline`` the whole
    :meth:`send` call, waits included. Up to ``max_attempts`` attempts are made on
    429, 502, 503, 504 and connection errors (refused, reset, timed out, an answer
    lost on the way); the wait before attempt *n + 1* is the server's ``Retry-After``
    when it sent one (plus up to ``backoff`` seconds of jitter), else
    ``min(max_backoff, backoff * 2 ** (n - 1))`` with equal jitter (half fixed, half
    random). Every attempt of one call carries the same ``Idempotency-Key``, so the
    server stores the notification once however many attempts reach it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30,
        *,
        deadline: float = 60,
        user_agent: str | None = None,
    ) -> None:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.query or parts.fragment:
            raise ValueError("base_url must be the service's http:// or https:// origin, "
                             "e.g. https://notify.example.com")
        if not (isinstance(api_key, str) and api_key and api_key.isascii()
                and api_key.isprintable() and api_key == api_key.strip()):
            # Never echo the value: it may be a real key with a stray character.
            raise ValueError("api_key must be a non-empty string of printable ASCII "
                             "characters without surrounding spaces")
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if not (isinstance(max_attempts, int) and max_attempts >= 1):
            raise ValueError("max_attempts must be an integer of at least 1")
        if not (backoff >= 0 and max_backoff >= backoff):
            raise ValueError("backoff must be >= 0 and max_backoff >= backoff")
        if not deadline > 0:
            raise ValueError("deadline must be a positive number of seconds")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + PATH
        self.bulk_url = self.base_url + BULK_PATH
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.deadline = float(deadline)
        self.user_agent = user_agent or f"notify-client/{__version__}"
        self.__api_key = api_key
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"NotifyClient(base_url={self.base_url!r})"

    def send(
        self,
        user_ids: UserId | Sequence[UserId],
        type: str,
        title: str,
        body: str | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        push: Push | None = None,
        urgency: Urgency | None = None,
        topic: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[Sent]:
        """Store a notification for one user (a string) or many (a sequence), then
        have the server emit it to their sockets. Returns one :class:`Sent` per
        distinct recipient, in request order.

        ``idempotency_key`` defaults to a new UUID for this call. Pass your own
        (e.g. ``"order-1234-shipped"``) to make separate calls, or separate processes,
        store once. Fields left ``None`` are not sent, so the server's defaults apply.

        Raises :class:`ValueError` or :class:`TypeError` for arguments that cannot be
        sent (``data`` that is not JSON, NaN, a bad key); the server validates the rest
        and its refusals are :class:`ValidationError`. See :mod:`notify_client.errors`.
        """
        key = self._key(idempotency_key)
        payload: dict[str, Any] = {}
        if isinstance(user_ids, (str, int)):
            payload["user_id"] = user_ids
        elif isinstance(user_ids, (bytes, bytearray, Mapping)) \
                or not isinstance(user_ids, Sequence):
            raise TypeError("user_ids must be a user id (str) or a sequence of them")
        else:
            payload["user_ids"] = list(user_ids)
        payload.update(type=type, title=title)
        optional = {"body": body, "data": data, "push": push, "urgency": urgency,
                    "topic": topic}
        payload.update({name: value for name, value in optional.items() if value is not None})
        # One encoding for every attempt: the server compares retries by their body.
        encoded = json.dumps(payload, ensure_ascii=False, allow_nan=False,
                             separators=(",", ":")).encode("utf-8")
        return self._post(self.url, encoded, key, _sent_list)

    def send_many(
        self,
        notifications: Sequence[Mapping[str, Any]],
        idempotency_key: str | None = None,
    ) -> list[list[Sent]]:
        """Store several notifications in one request (``POST /api/notifications/bulk``),
        then have the server emit each to its users' sockets. Each notification is a
        mapping with the fields of ``POST /api/notifications`` (``user_id`` or
        ``user_ids``, ``type``, ``title``, and optionally ``body``, ``data``, ``push``,
        ``urgency``, ``topic``), sent as it is. Returns one list of :class:`Sent` per
        notification, in the order given, each as :meth:`send` returns it.

        The server takes 1 to 1,000 notifications and stores all or none: when any is
        refused, :class:`ValidationError` is raised and its ``items`` names each bad one
        by its index. One ``idempotency_key`` (by default a new UUID) covers the whole
        request and every attempt of it, as for :meth:`send`.

        Raises :class:`ValueError` or :class:`TypeError` for arguments that cannot be
        sent (not a sequence of mappings, values that are not JSON, a bad key).
        """
        key = self._key(idempotency_key)
        if isinstance(notifications, (str, bytes, bytearray, Mapping)) \
                or not isinstance(notifications, Sequence):
            raise TypeError("notifications must be a sequence of mappings")
        objects = []
        for index, item in enumerate(notifications):
            if not isinstance(item, Mapping):
                raise TypeError(f"notifications[{index}] must be a mapping, "
                                f"not {type(item).__name__}")
            objects.append(dict(item))
        encoded = json.dumps({"notifications": objects}, ensure_ascii=False, allow_nan=False,
                             separators=(",", ":")).encode("utf-8")
        results = self._post(self.bulk_url, encoded, key, _sent_results)
        if len(results) != len(objects):
            raise ServerError(f"HTTP 201 with {len(results)} results for {len(objects)} "
                              "notifications", status=201, code="bad_response",
                              idempotency_key=key)
        return results

    @staticmethod
    def _key(idempotency_key: str | None) -> str:
        key = str(uuid.uuid4()) if idempotency_key is None else idempotency_key
        if not (isinstance(key, str) and 0 < len(key) <= MAX_IDEMPOTENCY_KEY
                and key.isascii() and key.isprintable()):
            raise ValueError(f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} printable "
                             "ASCII characters")
        return key

    # -- one call: attempts, waits, the answer ---------------------------------------

    def _post(self, url: str, body: bytes, key: str,
              answer: Callable[[Any, str, bool], _T]) -> _T:
        stop = time.monotonic() + self.deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = stop - time.monotonic()
            got = self._attempt(url, body, key,
                                timeout=max(0.05, min(self.timeout, remaining)))
            if got.failure is None and got.status is not None and 200 <= got.status < 300:
                return self._sent(url, got, key, attempt, answer)
            error = self._error(got, key, attempt)
            retryable = got.failure is not None or (
                got.status in RETRY_STATUSES and error.code not in FINAL_503_CODES)
            if not retryable:
                self._raise(error, got)
            if attempt >= self.max_attempts:
                error.message += f" (gave up after {attempt} attempt{'s' if attempt > 1 else ''})"
                self._raise(error, got)
            delay = self._delay(attempt, error.retry_after)
            if time.monotonic() + delay > stop:
                error.message += (f" (gave up after {attempt} attempt(s): waiting {delay:.1f} s "
                                  f"would pass the {self.deadline:g} s deadline)")
                self._raise(error, got)
            log.info("POST %s: %s; attempt %d of %d in %.2f s (Idempotency-Key %s)",
                     url, error, attempt + 1, self.max_attempts, delay, key)
            time.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        if retry_after is not None:
            # The server knows best; the jitter spreads the clients it told the same time.
            return retry_after + random.uniform(0, min(self.backoff, ceiling))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _attempt(self, url: str, body: bytes, key: str, timeout: float) -> _Attempt:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Authorization": f"Bearer {self.__api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": key,
            "User-Agent": self.user_agent,
        })
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return _Attempt(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    raw = exc.read()
                except (OSError, http.client.HTTPException):
                    raw = b""  # the error's body was cut off; its status still counts
                return _Attempt(exc.code, exc.headers, raw)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise ServerError(f"TLS certificate not accepted: {reason}", code="tls_error",
                                  idempotency_key=key) from None
            return _Attempt(failure=reason if isinstance(reason, BaseException) else exc)
        except (OSError, http.client.HTTPException) as exc:
            # Raised while reading the answer: reset, closed before the status line
            # (RemoteDisconnected), timed out, or cut off mid-body (IncompleteRead).
            return _Attempt(failure=exc)

    def _sent(self, url: str, got: _Attempt, key: str, attempt: int,
              answer: Callable[[Any, str, bool], _T]) -> _T:
        headers = got.headers or Message()
        replayed = headers.get("Idempotent-Replayed", "").lower() == "true"
        try:
            sent = answer(json.loads(got.body), key, replayed)
        except (ValueError, KeyError, TypeError, IndexError):
            shape = ('{"notifications": [{"id", "user_id"}]}' if answer is _sent_list
                     else '{"results": [{"notifications": [{"id", "user_id"}]}]}')
            raise ServerError(f"HTTP {got.status} without the documented body {shape}",
                              status=got.status, code="bad_response", attempts=attempt,
                              idempotency_key=key) from None
        if attempt > 1:
            log.info("POST %s: stored after %d attempts (replayed=%s)", url, attempt,
                     replayed)
        return sent

    def _error(self, got: _Attempt, key: str, attempt: int) -> NotifyError:
        if got.failure is not None:
            failure = got.failure
            timed_out = isinstance(failure, (TimeoutError, socket.timeout))
            detail = str(failure) or type(failure).__name__
            return Unavailable(self._scrub(f"{type(failure).__name__}: {detail}"),
                               code="timeout" if timed_out else "connection_error",
                               attempts=attempt, idempotency_key=key)
        status = got.status or 0
        code, message, items = _error_shape(got.body)
        headers = got.headers or Message()
        if 300 <= status < 400:
            code = "redirect"
            message = (f"redirected to {headers.get('Location', '?')}; set base_url to the "
                       "address that answers")
        code = code or "http_error"
        message = message or f"HTTP {status} {http.client.responses.get(status, '')}".strip()
        if status == 401:
            cls: type[NotifyError] = AuthError
        elif status in (400, 413, 415):
            cls = ValidationError
        elif status == 422:
            cls = IdempotencyConflict if code == "idempotency_key_reused" else ValidationError
        elif status == 429:
            cls = RateLimited
        elif status in (502, 503, 504):
            cls = Unavailable
        else:
            cls = ServerError
        return cls(self._scrub(message[:_MAX_MESSAGE]), status=status, code=code,
                   retry_after=parse_retry_after(headers.get("Retry-After")),
                   attempts=attempt, idempotency_key=key,
                   items=[self._scrub_item(i) for i in items] if items is not None else None)

    def _raise(self, error: NotifyError, got: _Attempt) -> NoReturn:
        if got.failure is not None:
            raise error from got.failure
        raise error from None

    def _scrub(self, text: str) -> str:
        return text.replace(self.__api_key, "[redacted]")

    def _scrub_item(self, item: dict[str, Any]) -> dict[str, Any]:
        return {name: self._scrub(value[:_MAX_MESSAGE]) if isinstance(value, str) else value
                for name, value in item.items()}


def _sent_list(answer: Any, key: str, replayed: bool) -> list[Sent]:
    """The Sent of ``{"notifications": [{"id", "user_id"}, ...]}``."""
    sent = []
    for item in answer["notifications"]:
        user_id, nid = item["user_id"], item["id"]
        if not isinstance(user_id, str) or isinstance(nid, bool) or not isinstance(nid, int):
            raise TypeError
        sent.append(Sent(user_id, nid, replayed, key))
    return sent


def _sent_results(answer: Any, key: str, replayed: bool) -> list[list[Sent]]:
    """One list of Sent per result of ``{"results": [{"notifications": [...]}, ...]}``."""
    results = answer["results"]
    if not isinstance(results, list):
        raise TypeError
    return [_sent_list(result, key, replayed) for result in results]


def _error_shape(raw: bytes) -> tuple[str | None, str | None, list[dict[str, Any]] | None]:
    """``(code, message, items)`` from ``{"error": {"code", "message"}}``, else ``(None,
    None, None)``. ``items`` is the bulk route's list of bad notifications, each
    ``{"index", "code", "message"}``, or None when the error has none."""
    try:
        error = json.loads(raw)["error"]
        code, message, items = error.get("code"), error.get("message"), error.get("items")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None, None
    if not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
        items = None
    return (code if isinstance(code, str) else None,
            message if isinstance(message, str) else None, items)
