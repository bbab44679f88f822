"""What a check takes and what it returns.

A check is a function ``Context -> Result``. The context is immutable: the
command's options, where the URL landed, the transport, and the facts earlier
checks learned. A result is a status, one line of evidence, one line of fix,
data for the JSON report, and the facts it learned for the checks after it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from utils.doctor.served import WEBSOCKET_ONLY
from utils.doctor.target import Target
from utils.doctor.transport import Transport

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


class Unreachable(Exception):
    """No answer from the URL at all: nothing can be checked (exit 2)."""


@dataclass(frozen=True)
class Options:
    url: str
    origin: str | None = None
    token: str | None = None
    api_key: str | None = None
    timeout: float = 8.0
    json: bool = False
    transports: tuple[str, ...] | None = None  # --transports: the server's, as stated


@dataclass(frozen=True)
class Facts:
    """What checks learned that later checks need; None: not (yet) learned."""

    target: Target | None = None  # reachability: where the URL lands after redirects
    fatal: bool | None = None  # reachability: nothing else can be checked
    transports: tuple[str, ...] | None = None  # --transports, or reachability: served
    transports_from: str | None = None  # where ``transports`` was learned (served.py)
    upgrades: tuple[str, ...] | None = None  # handshake: the transports offered
    cookie: str | None = None  # handshake: the cookie it sets ("" none)
    split: bool | None = None  # split sessions: requests of a session reach other processes
    user_id: str | None = None  # auth: who --token is
    token_in_payload: bool | None = None  # auth: the token works in the auth payload
    deflate: str | None = None  # websocket: the negotiated extensions ("" none)

    def updated(self, learned: Facts) -> Facts:
        """These facts, with what ``learned`` knows replacing them."""
        known = {f.name: getattr(learned, f.name) for f in dataclasses.fields(learned)}
        return dataclasses.replace(self, **{k: v for k, v in known.items() if v is not None})


@dataclass(frozen=True)
class Result:
    status: str
    evidence: str
    fix: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    facts: Facts = Facts()


@dataclass(frozen=True)
class Context:
    options: Options
    target: Target  # the URL given, until reachability learns where it lands
    transport: Transport
    facts: Facts = Facts()

    @property
    def timeout(self) -> float:
        return self.options.timeout

    @property
    def origin(self) -> str | None:
        return self.options.origin

    @property
    def websocket_only(self) -> bool:
        """The server serves WebSocket alone: nothing is checked over polling."""
        return self.facts.transports == WEBSOCKET_ONLY

    @property
    def session_transport(self) -> str:
        """What a new session is opened over, as clients of this server open it."""
        return "WebSocket" if self.websocket_only else "polling"

    def websocket_offered(self) -> bool:
        """The handshake offered the upgrade, or the server is known to serve WebSocket."""
        return "websocket" in (self.facts.upgrades or ()) + (self.facts.transports or ())

    def auth(self) -> dict[str, Any] | None:
        """The Socket.IO CONNECT payload: the token, as the page sends it."""
        return {"token": self.options.token} if self.options.token else None

    def learn(self, facts: Facts) -> Context:
        merged = self.facts.updated(facts)
        return dataclasses.replace(self, facts=merged, target=merged.target or self.target)


@dataclass(frozen=True)
class Check:
    """One line of the report: its id (JSON), its title (text) and its function.

    ``needs_one_process``: the check holds a polling session over several
    requests, so it cannot be judged when sessions split across processes."""

    id: str
    title: str
    run: Callable[[Context], Result]
    needs_one_process: bool = False


@dataclass(frozen=True)
class Finding:
    """A check's result, as reported."""

    id: str
    title: str
    result: Result

    @property
    def status(self) -> str:
        return self.result.status
