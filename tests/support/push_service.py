"""Push services for tests: the real local one, and a scripted stand-in.

``PushService`` runs the npm package web-push-testing (1.2.2, in node_modules) as a
process of our own: ``node node_modules/web-push-testing/src/bin/server.js PORT``,
never its CLI's ``start``, which detaches the server and keeps its PID in
node-persist files (``.node-persist/storage/`` under the working directory). The
server itself loads no node-persist and writes no file: subscriptions and messages
live in its memory and die with it. It still runs with a temporary directory as its
working directory, so nothing can land in the repository.

What the service does (web-push-testing 1.2.2, read from its source and checked by
tests/unit/push/test_push_service.py):

- ``POST /status`` → 200 ``OK``.
- ``POST /subscribe``, form fields ``userVisibleOnly=true`` and
  ``applicationServerKey=<base64url of the 65-byte VAPID public key>`` → 200
  ``{"data": {"endpoint": "http://localhost:PORT/notify/<clientHash>", "keys":
  {"p256dh", "auth"}, "clientHash"}}``. No ``expirationTime``. A JSON body is refused:
  ``userVisibleOnly`` must be the string ``"true"`` or ``"false"``.
- ``POST /notify/<clientHash>``: the push. It needs ``Content-Encoding: aes128gcm``
  (or aesgcm), a numeric ``TTL`` (0 is accepted), ``Authorization: vapid t=…,k=…``
  whose key is the subscription's and whose JWT verifies (ES256, ``exp``; ``aud`` and
  ``sub`` are not checked), and ``Content-Type: application/octet-stream``: without
  it the body is never read and decryption fails with 400 (with ``application/json``
  its JSON parser meets the Content-Encoding first: 415). It answers 201 with an
  empty body, 410 ``{"reason": …}`` once the subscription is expired, 400
  ``{"error": {"message"}}`` for anything else (an unknown hash included).
- ``POST /get-notifications`` with JSON ``{"clientHash"}`` → 200 ``{"data":
  {"messages": [plaintext, …]}}``, oldest first, kept after expiry.
- ``POST /expire-subscription/<clientHash>`` → 200 ``OK``; 400 for an unknown hash.

Node's ``listen(port)`` binds every interface; a small preload (written into the
working directory, passed with ``--require``) makes it 127.0.0.1. Endpoints still name
``localhost``, the host the package hard-codes.

``ScriptedEndpoint`` is a loopback HTTP server in a thread that answers each request
with the next status of a script (429 with Retry-After, 500, 503, …, then 201 for
ever) and records every request: for the sender's retries.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Bound now, at import: once an app is built in this process, eventlet's green copy of
# http.server (its socketserver's locks are eventlet's, which a real thread cannot wake)
# can stand in sys.modules['http.server'], and a server made from it hangs in shutdown()
# (tests/support/loopback_http.py binds the server class the same way).
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.processes import start_group, stop_group
from tests.support.loopback_http import LoopbackServer, RecordingHandler
from tests.support.servers import ROOT, free_port
from tests.support.services import in_ci

PACKAGE = ROOT / "node_modules" / "web-push-testing"
SERVER_JS = PACKAGE / "src" / "bin" / "server.js"
NODE_MAJOR = 20  # web-push-testing's "engines"
# Node's net.Server.listen(port, callback) binds every interface; this makes it loopback.
LOOPBACK_PRELOAD = """\
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  return listen.apply(this, args);
};
"""


class PushServiceError(Exception):
    """web-push-testing refused a control request; the message is its own."""


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class VapidKeys:
    """A VAPID pair in the formats the server's settings and browsers take."""

    private: str  # base64url of the raw 32-byte value: VAPID_PRIVATE_KEY
    public: str  # base64url of the 65-byte uncompressed point: applicationServerKey

    @classmethod
    def generate(cls) -> VapidKeys:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        point = key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
        return cls(b64url(key.private_numbers().private_value.to_bytes(32, "big")),
                   b64url(point))

    def vapid(self) -> Any:
        """The key as py_vapid's, to sign a hand-built push
        (tests/unit/push/test_push_service.py)."""
        from py_vapid import Vapid

        return Vapid.from_raw(self.private.encode())


def browser_json(subscription: dict[str, Any]) -> dict[str, Any]:
    """What ``PushSubscription.toJSON()`` gives in a browser, from a subscribe() answer."""
    return {"endpoint": subscription["endpoint"], "expirationTime": None,
            "keys": dict(subscription["keys"])}


def unavailable_reason(node: str | None = None) -> str | None:
    """Why web-push-testing cannot run here (with ``node``, default the one on PATH),
    or None when it can."""
    node = node or shutil.which("node")
    if node is None:
        return "node is not on PATH"
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{node} --version failed: {exc}"
    found = re.match(r"v(\d+)\.", version)
    if not found or int(found.group(1)) < NODE_MAJOR:
        return f"web-push-testing needs node >= {NODE_MAJOR}; found {version or '?'}"
    if not SERVER_JS.is_file():
        return "web-push-testing is not in node_modules (run npm ci)"
    return None


class PushService:
    """web-push-testing on a free loopback port, started and stopped by its own PID."""

    def __init__(self, workdir: Path, node: str | None = None) -> None:
        self.workdir = workdir
        self.node = node or shutil.which("node") or "node"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "web-push-testing.log"
        self._log: Any = None
        self._http = requests.Session()

    # -- life -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the control requests go (127.0.0.1: never a resolver's ::1 first)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """The origin of its endpoints, as they name it: for WEB_PUSH_ENDPOINT_ORIGINS."""
        return f"http://localhost:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout: float = 20, attempts: int = 3) -> PushService:
        """Start it; ready when ``POST /status`` answers 200. A port taken between
        free_port() and the bind is retried on another."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        preload = self.workdir / "loopback.cjs"
        preload.write_text(LOOPBACK_PRELOAD)
        for attempt in range(attempts):
            self.port = free_port()
            self._log = open(self.log_path, "ab")
            self.proc = start_group([self.node, "--require", str(preload), str(SERVER_JS),
                                     str(self.port)], self._log, cwd=self.workdir)
            if self._wait_ready(timeout):
                return self
            taken = "EADDRINUSE" in self.output()
            self.stop()
            if not taken or attempt == attempts - 1:
                break
        raise RuntimeError(f"web-push-testing did not answer POST /status:\n{self.output()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self._http.post(self.url + "/status", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = stop_group(self.proc, 5)
        self.proc = None
        self._log.close()
        self._http.close()
        self._http = requests.Session()
        return code

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> PushService:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- what a browser and a test do -----------------------------------------------

    def _post(self, path: str, **kwargs: Any) -> requests.Response:
        response = self._http.post(self.url + path, timeout=10, **kwargs)
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise PushServiceError(f"POST {path}: {response.status_code} {message}")
        return response

    def subscribe(self, application_server_key: str) -> dict[str, Any]:
        """A new subscription, as ``PushManager.subscribe`` makes one: ``{"endpoint",
        "keys": {"p256dh", "auth"}, "clientHash"}`` (browser_json() gives toJSON())."""
        response = self._post("/subscribe", data={
            "userVisibleOnly": "true", "applicationServerKey": application_server_key})
        return response.json()["data"]

    def messages(self, client_hash: str) -> list[str]:
        """Every push the subscription received, decrypted, oldest first."""
        response = self._post("/get-notifications", json={"clientHash": client_hash})
        return response.json()["data"]["messages"]

    def wait_for_messages(self, client_hash: str, count: int = 1,
                          timeout: float = 10) -> list[str]:
        """messages() once at least ``count`` arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(found := self.messages(client_hash)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout}s for {count} push(es); got {found!r}")
            time.sleep(0.05)
        return found

    def expire(self, client_hash: str) -> None:
        """Expire the subscription: every later push to it gets 410."""
        self._post(f"/expire-subscription/{client_hash}")


def running_push_service(workdir: Path) -> Iterator[PushService]:
    """A started PushService for a fixture to yield, stopped afterwards. Without node
    or the package: a failure under CI=true, a skip with the reason elsewhere."""
    reason = unavailable_reason()
    if reason:
        if in_ci():
            pytest.fail(f"{reason}; under CI=true the push tests must run (scripts/test.sh "
                        "runs npm ci)")
        pytest.skip(reason)
    service = PushService(workdir).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session", name="push_service")
def push_service_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushService]:
    """``push_service``: one web-push-testing for the session. A test module (or a
    conftest) imports ``push_service_fixture  # noqa: F401``; each test subscribes
    anew, so tests share nothing but the process."""
    yield from running_push_service(tmp_path_factory.mktemp("web-push-testing"))


# -- the scripted endpoint -------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One scripted response; ``delay`` seconds pass before it is sent."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


def answer(status: int, retry_after: int | str | None = None, body: bytes = b"",
           delay: float = 0.0, headers: dict[str, str] | None = None) -> Answer:
    """``answer(429, retry_after=2)``, ``answer(503, headers={...}, delay=0.5)``."""
    named = dict(headers or {})
    if retry_after is not None:
        named["Retry-After"] = str(retry_after)
    return Answer(status, named, body, delay)


@dataclass(frozen=True)
class Received:
    """One request the endpoint answered: header names lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    status: int  # what it was answered


class ScriptedEndpoint(LoopbackServer):
    """A push endpoint on 127.0.0.1 that answers the script in order, then ``then``
    for ever; ``received`` lists what came, in order. Use as a context manager."""

    def __init__(self, script: Iterable[int | Answer] = (), then: int | Answer = 201,
                 url_host: str = "127.0.0.1") -> None:
        self._script = [a if isinstance(a, Answer) else Answer(a) for a in script]
        self._then = then if isinstance(then, Answer) else Answer(then)
        super().__init__(url_host)

    def endpoint(self, path: str = "/push/subscription-1") -> str:
        """A subscription's endpoint URL on this server."""
        return self.origin + path

    @property
    def received(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """received, once it holds at least ``count``; AssertionError after ``timeout``."""
        return self._wait(lambda: list(self._received), count, timeout,
                          lambda found: str([r.status for r in found]))

    def _next(self) -> Answer:
        with self._changed:
            return self._script.pop(0) if self._script else self._then

    def _record(self, request: Received) -> None:
        with self._changed:
            self._received.append(request)
            self._changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(RecordingHandler):
            def _answer(self) -> None:
                arrived, body, headers = self.read_request()
                reply = endpoint._next()
                endpoint._record(Received(self.command, self.path, headers, body, arrived,
                                          reply.status))
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.body:
                    self.wfile.write(reply.body)

            do_POST = do_GET = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads ``received``, not stderr

        return Handler

