"""Push subscriptions: checking what a browser sends, and storing, listing and
deleting them. A subscription's endpoint is a capability URL (its path is the
secret that lets anyone push to that browser), so it is stored but never logged or
shown: lists and logs name its origin only.

No SSRF: the server sends only to endpoints whose origin is on the allowlist
(WEB_PUSH_ENDPOINT_ORIGINS). That is checked here when a browser subscribes, and
again before every send (utils/push/sender.py). One parser, in utils/push/http.py,
reads an endpoint for both checks and for the send itself. At send time, the address
that the host resolves to is checked too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.exc import IntegrityError

from utils.config.vapid import exact_b64url
from utils.db.sqlite_locks import retry_when_locked
from utils.errors import ValidationError
from utils.extensions import db
from utils.notifications.models import isoformat, utcnow
from utils.ops import metrics
from utils.push.http import MAX_ENDPOINT, Refused, address_problem, names_loopback, parse_endpoint
from utils.push.models import PushSend, PushSubscription

NOT_ALLOWED = "push_endpoint_not_allowed"


@dataclass(frozen=True)
class NewSubscription:
    endpoint: str
    p256dh: str
    auth: str
    expires_at: datetime | None


def endpoint_origin(endpoint: str) -> str | None:
    """``scheme://host[:port]`` of a plain http(s) URL (utils/push/http.py); None when
    it is not one."""
    try:
        return parse_endpoint(endpoint).origin
    except Refused:
        return None


def allowlist_entry(origin: str | None, allowed: Iterable[str]) -> str | None:
    """The allowlist entry that ``origin`` matches, or None: an exact match, or
    ``https://*.example.com`` for any subdomain of example.com."""
    if origin is None:
        return None
    for entry in allowed:
        if origin == entry:
            return entry
        scheme, _, rest = entry.partition("://*.")
        if rest and origin.startswith(scheme + "://") and origin.endswith("." + rest):
            return entry
    return None


def endpoint_text(value: object) -> str:
    """A string that can be an endpoint: 1 to MAX_ENDPOINT characters of printable
    ASCII. Anything else (a lone surrogate, a NUL) is ValidationError: no stored
    endpoint has it, and no database should be asked."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ENDPOINT:
        raise ValidationError(f"endpoint must be a URL of at most {MAX_ENDPOINT} characters")
    if not value.isascii() or not value.isprintable():
        raise ValidationError("endpoint must be a URL of printable ASCII")
    return value


def parse_subscription(body: object, allowed: Iterable[str]) -> NewSubscription:
    """``PushSubscription.toJSON()``, checked: a plain, allowed endpoint, a P-256 point
    and a 16-byte auth secret. A foreign endpoint raises ValidationError with
    NOT_ALLOWED."""
    if not isinstance(body, dict):
        raise ValidationError('send PushSubscription.toJSON(): {"endpoint", "keys": '
                              '{"p256dh", "auth"}}')
    endpoint = endpoint_text(body.get("endpoint"))
    try:
        parsed = parse_endpoint(endpoint)
    except Refused as exc:
        raise ValidationError(f"endpoint must be a plain http(s) URL: {exc}") from None
    entry = allowlist_entry(parsed.origin, allowed)
    if entry is None:
        raise ValidationError(f"push endpoints at {parsed.origin} are not allowed on this "
                              "server", code=NOT_ALLOWED, status=422)
    # An IP literal is checked now; a name is checked where it resolves, at each send.
    ip = parsed.ip
    problem = address_problem(ip, names_loopback(entry)) if ip is not None else None
    if problem:
        raise ValidationError(f"push endpoints at {parsed.origin} are not allowed: "
                              f"{problem}", code=NOT_ALLOWED, status=422)
    keys = body.get("keys")
    if not isinstance(keys, dict):
        raise ValidationError('keys must be {"p256dh": ..., "auth": ...}')
    return NewSubscription(endpoint, _p256dh(keys.get("p256dh")), _auth(keys.get("auth")),
                           _expiration(body.get("expirationTime")))


def _p256dh(value: object) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        raw = exact_b64url(value, 65)
        if raw[0] != 4:
            raise ValueError
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValidationError("keys.p256dh must be base64url of an uncompressed P-256 point "
                              "(65 bytes) on the curve") from None
    return str(value)


def _auth(value: object) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        exact_b64url(value, 16)
    except ValueError:
        raise ValidationError("keys.auth must be base64url of 16 bytes") from None
    return str(value)


def _expiration(value: object) -> datetime | None:
    """The browser's expirationTime: milliseconds since the epoch, or null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 <= value < 253402300799000:  # before year 10000
        raise ValidationError("expirationTime must be null or milliseconds since the epoch")
    return datetime.fromtimestamp(value / 1000, UTC).replace(tzinfo=None)


_SUBS = PushSubscription.__table__
_SENDS = PushSend.__table__


@retry_when_locked
def subscribe(user_id: str, new: NewSubscription, limit: int) -> tuple[int, bool]:
    """Store ``new`` for ``user_id``; returns (id, created). A known endpoint moves to
    this user with its new keys (the same browser, another login). Past ``limit``
    subscriptions the user's oldest go."""
    values = {"user_id": user_id, "p256dh": new.p256dh, "auth": new.auth,
              "expires_at": new.expires_at}
    with db.engine.begin() as conn:
        known = conn.execute(sa.select(_SUBS.c.id).where(_SUBS.c.endpoint == new.endpoint)).first()
        if known is not None:
            conn.execute(sa.update(_SUBS).where(_SUBS.c.id == known.id).values(**values))
            sub_id, created = int(known.id), False
        else:
            try:
                with conn.begin_nested():
                    inserted = conn.execute(sa.insert(_SUBS).values(
                        endpoint=new.endpoint, created_at=utcnow(), **values))
                sub_id = int(inserted.inserted_primary_key[0])
                created = True
            except IntegrityError:  # a concurrent subscribe of the same endpoint won
                conn.execute(sa.update(_SUBS).where(_SUBS.c.endpoint == new.endpoint)
                             .values(**values))
                sub_id = int(conn.execute(sa.select(_SUBS.c.id).where(
                    _SUBS.c.endpoint == new.endpoint)).scalar_one())
                created = False
        _keep_newest(conn, user_id, limit)
    return sub_id, created


def _keep_newest(conn: sa.Connection, user_id: str, limit: int) -> None:
    ids = conn.execute(sa.select(_SUBS.c.id).where(_SUBS.c.user_id == user_id)
                       .order_by(_SUBS.c.created_at.desc(), _SUBS.c.id.desc())).scalars().all()
    extra = list(ids[limit:])
    if extra:
        delete_subscriptions(conn, extra)
        metrics.subscriptions_removed("replaced", len(extra))


def delete_subscriptions(conn: sa.Connection, ids: list[int]) -> None:
    """Delete subscriptions and the pushes still queued for them."""
    if ids:
        conn.execute(sa.delete(_SENDS).where(_SENDS.c.subscription_id.in_(ids)))
        conn.execute(sa.delete(_SUBS).where(_SUBS.c.id.in_(ids)))


def of_user(user_id: str) -> list[sa.Row]:
    """The user's subscriptions, newest first."""
    with db.engine.connect() as conn:
        return list(conn.execute(sa.select(_SUBS).where(_SUBS.c.user_id == user_id)
                                 .order_by(_SUBS.c.created_at.desc(), _SUBS.c.id.desc())))


@retry_when_locked
def unsubscribe(user_id: str, endpoint: str) -> bool:
    """Delete the user's subscription with ``endpoint``; False when they have none."""
    with db.engine.begin() as conn:
        ids = list(conn.execute(sa.select(_SUBS.c.id).where(
            _SUBS.c.user_id == user_id, _SUBS.c.endpoint == endpoint)).scalars())
        delete_subscriptions(conn, ids)
    metrics.subscriptions_removed("unsubscribed", len(ids))
    return bool(ids)


@retry_when_locked
def set_enabled(user_id: str, sub_id: int, enabled: bool) -> sa.Row | None:
    """Turn the user's subscription ``sub_id`` on or off; the row as it now is, or None
    when the user has no such subscription. A subscription turned off is kept, and gets
    no pushes (utils/push/checks.py queues none; utils/push/sends.py drops those
    already queued)."""
    with db.engine.begin() as conn:
        mine = (_SUBS.c.id == sub_id) & (_SUBS.c.user_id == user_id)
        conn.execute(sa.update(_SUBS).where(mine).values(enabled=enabled))
        return conn.execute(sa.select(_SUBS).where(mine)).first()


@retry_when_locked
def prune_expired_sends() -> int:
    """Delete queued pushes past their deadline (``flask prune``, after the
    notifications). One transaction, run again whole while SQLite is locked."""
    deleted = db.session.execute(sa.delete(PushSend).where(PushSend.expires_at < utcnow()))
    db.session.commit()
    return int(deleted.rowcount or 0)


def listed(row: sa.Row) -> dict[str, object]:
    """What the user's list shows of a subscription: never its whole endpoint."""
    return {"id": row.id, "origin": endpoint_origin(row.endpoint),
            "created_at": isoformat(row.created_at),
            "last_success_at": isoformat(row.last_success_at), "enabled": bool(row.enabled)}
