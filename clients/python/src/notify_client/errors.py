"""Typed errors of the producer client.

Every error carries the HTTP ``status`` (``None`` when no answer arrived), the
server's stable ``code`` and its ``message`` (from the error shape
``{"error": {"code", "message"}}``), how many ``attempts`` were made and the
``idempotency_key`` they used, so a caller can retry later with the same key.

No error ever holds the API key: not in its message, its repr or its attributes.
"""

from __future__ import annotations


class NotifyError(Exception):
    """Base class: ``POST /api/notifications`` did not store the notification (or the
    client cannot tell whether it did, for :class:`Unavailable` after a lost answer;
    retrying with the same ``idempotency_key`` is then safe)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        retry_after: float | None = None,
        attempts: int = 1,
        idempotency_key: str | None = None,
        items: list[dict] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.attempts = attempts
        self.idempotency_key = idempotency_key
        #: ``send_many``'s refused notifications, each ``{"index", "code", "message"}``
        #: (``index`` in the list sent); None when the error names none.
        self.items = items

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        return f"{where} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
                f"message={self.message!r}, attempts={self.attempts!r})")


class AuthError(NotifyError):
    """401: the producer key is missing or wrong (``api_key_missing``,
    ``api_key_invalid``). Never retried."""


class ValidationError(NotifyError):
    """The request was refused as it stands: 400 (``invalid_json``,
    ``validation_error``), 413 (``payload_too_large``) or 415
    (``unsupported_media_type``). Never retried. From ``send_many``, ``items`` names
    each refused notification by its index; none of the batch was stored."""


class IdempotencyConflict(NotifyError):
    """422 ``idempotency_key_reused``: the key was used before with another body."""


class RateLimited(NotifyError):
    """429 ``rate_limited`` on every attempt, or a ``Retry-After`` longer than the time
    left before the deadline. ``retry_after`` is the server's last wait, in seconds."""


class Unavailable(NotifyError):
    """The server could not be reached or could not serve: 502, 503 or 504 on every
    attempt, a connection error or timeout on the last one (``status`` is ``None`` and
    ``code`` is ``connection_error`` or ``timeout``), or a 503 that retrying cannot fix
    (``producer_disabled``, ``push_disabled``). When the last attempt's answer was lost,
    the server may have stored the notification: retry with ``idempotency_key``."""


class ServerError(NotifyError):
    """Any other answer: 500 ``internal_error``, a redirect, an unexpected status or
    a 201 whose body is not the documented one."""
