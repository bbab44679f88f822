"""One-time sign-in links for the /debug page on a production server: a producer
(with NOTIFY_API_KEY) mints one for a user; the phone opens it; the page trades its
code, once, for a short-lived user token.

The code travels in the URL's fragment (``/debug#code=...``), which browsers never
send to a server, so it reaches no access log nor Referer. Only its SHA-256 is
stored; a code is spent by the one UPDATE that finds it unspent and unexpired, so
two phones racing with one link cannot both sign in.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa

from utils.auth.tokens import MAX_USER_ID_LENGTH
from utils.extensions import db

LINK_TTL_DEFAULT = 600  # seconds a link may wait to be opened
LINK_TTL_MAX = 3600
TOKEN_TTL = 3600  # the user token the page gets for it


class SignInLink(db.Model):
    __tablename__ = "sign_in_links"

    code_hash = sa.Column(sa.String(64), primary_key=True)
    user_id = sa.Column(sa.String(MAX_USER_ID_LENGTH), nullable=False)
    expires_at = sa.Column(sa.DateTime, nullable=False, index=True)
    used_at = sa.Column(sa.DateTime, nullable=True)


_LINKS = SignInLink.__table__


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def mint(user_id: str, ttl: int, now: datetime) -> tuple[str, datetime]:
    """A new link's code for ``user_id`` and when it expires; stored as its hash.
    Expired links are deleted on the way."""
    code = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=ttl)
    with db.engine.begin() as conn:
        conn.execute(sa.delete(_LINKS).where(_LINKS.c.expires_at < now))
        conn.execute(sa.insert(_LINKS).values(code_hash=_digest(code), user_id=user_id,
                                              expires_at=expires_at))
    return code, expires_at


def spend(code: str, now: datetime) -> str | None:
    """The user the link was minted for, once: None when the code is unknown, spent
    or expired."""
    digest = _digest(code)
    with db.engine.begin() as conn:
        spent = conn.execute(sa.update(_LINKS).where(
            _LINKS.c.code_hash == digest, _LINKS.c.used_at.is_(None),
            _LINKS.c.expires_at > now).values(used_at=now)).rowcount
        if spent != 1:
            return None
        return conn.execute(sa.select(_LINKS.c.user_id)
                            .where(_LINKS.c.code_hash == digest)).scalar_one()
