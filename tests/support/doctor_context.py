"""What the doctor's unit tests hand a check: the server's URL, an origin it allows,
a token it can read, and a Context around a RecordedServer
(tests/support/doctor_server.py) in place of the network."""

from __future__ import annotations

import time

import jwt

from tests.support.doctor_server import RecordedServer
from utils.doctor.model import Context, Facts, Options
from utils.doctor.target import Target

URL = "http://127.0.0.1:8000"
ALLOWED = "http://localhost:3000"
TIMEOUT = 0.5


def token(ttl: int = 3600, **claims) -> str:
    """A JWT for user alice, as --token gives one (nothing here checks its signature)."""
    now = int(time.time())
    return jwt.encode({"sub": "alice", "iat": now, "exp": now + ttl, **claims},
                      "any-secret-" + "x" * 40, algorithm="HS256")


def context(fake: RecordedServer, url: str = URL, origin: str | None = ALLOWED,
            jwt_token: str | None = None, api_key: str | None = None, **facts) -> Context:
    """What a check is given, with ``facts`` already learned by the checks before it."""
    options = Options(url, origin, jwt_token, api_key, TIMEOUT)
    return Context(options, Target.parse(url), fake, Facts(**facts))
