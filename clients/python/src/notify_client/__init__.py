"""Producer client for the notification backend.

    from notify_client import NotifyClient

    notify = NotifyClient("https://notify.example.com", api_key=os.environ["NOTIFY_API_KEY"])
    sent = notify.send(["alice", "bob"], "order", "Shipped", data={"order": 1234})

Standard library only; see :class:`NotifyClient` for retries and
:mod:`notify_client.errors` for the typed errors.
"""

from .client import (
    FINAL_503_CODES,
    RETRY_STATUSES,
    NotifyClient,
    Push,
    Sent,
    Urgency,
    UserId,
    __version__,
    parse_retry_after,
)
from .errors import (
    AuthError,
    IdempotencyConflict,
    NotifyError,
    RateLimited,
    ServerError,
    Unavailable,
    ValidationError,
)
from .outbox import enqueue as enqueue

__all__ = [
    "FINAL_503_CODES",
    "RETRY_STATUSES",
    "AuthError",
    "IdempotencyConflict",
    "NotifyClient",
    "NotifyError",
    "Push",
    "RateLimited",
    "Sent",
    "ServerError",
    "Unavailable",
    "Urgency",
    "UserId",
    "ValidationError",
    "__version__",
    "parse_retry_after",
]
