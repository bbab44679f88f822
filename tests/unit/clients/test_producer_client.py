"""The Python producer client (clients/python, package ``notify_client``).

Against a real gunicorn server: sending to one and many users, typed refusals, and a
request whose answer is lost on the way (a loopback proxy drops it), which the client
retries with the same Idempotency-Key and the server stores once. Against a scripted
loopback endpoint: 429 and 503 with Retry-After (in seconds and as an HTTP date), back-off
without it, and the limits of retrying. And the package installed into a fresh venv,
without this server's requirements.

The client is imported from its source tree (pytest's pythonpath, pyproject.toml),
not installed here.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from notify_client import (
    AuthError,
    IdempotencyConflict,
    NotifyClient,
    NotifyError,
    RateLimited,
    Sent,
    ServerError,
    Unavailable,
    ValidationError,
    parse_retry_after,
)

from tests.support import servers
from tests.support.servers import SERVER_API_KEY, free_port, gunicorn, migrate, mint, server_env

PACKAGE_DIR = servers.ROOT / "clients" / "python"

OK_BODY = {"notifications": [{"id": 7, "user_id": "alice"}]}
# Room for scheduling on a busy 2-core machine; no assertion measures speed.
SLACK = 3.0


# -- a real server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("producer-client")
    env = server_env(tmp)
    migrate(env)
    proc = gunicorn(tmp, env, name="producer-client").start()
    yield proc
    proc.stop()


def make_client(url: str, **options) -> NotifyClient:
    options = {"backoff": 0.05, "max_backoff": 0.2, "deadline": 30, **options}
    return NotifyClient(url, SERVER_API_KEY, **options)


def inbox(server, user_id: str) -> list[dict]:
    response = requests.get(server.url + "/api/notifications", timeout=10,
                            params={"limit": 100},
                            headers={"Authorization": f"Bearer {mint(user_id)}"})
    assert response.status_code == 200, response.text
    return response.json()["notifications"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.mark.server
def test_send_to_one_user_lands_in_their_inbox(server):
    user = unique("pc-one")
    sent = make_client(server.url).send(user, "comment", "Bob replied", "Nice post",
                                        {"post": 7})
    assert len(sent) == 1
    assert isinstance(sent[0], Sent)
    assert sent[0].user_id == user and isinstance(sent[0].id, int)
    assert sent[0].replayed is False
    assert uuid.UUID(sent[0].idempotency_key)  # set by the client
    [stored] = inbox(server, user)
    assert (stored["id"], stored["type"], stored["title"], stored["body"], stored["data"]) == (
        sent[0].id, "comment", "Bob replied", "Nice post", {"post": 7})


@pytest.mark.server
def test_send_to_many_users_in_order_without_duplicates(server):
    users = [unique("pc-many") for _ in range(3)]
    sent = make_client(server.url).send([users[0], users[1], users[0], users[2]], "order",
                                        "Shipped", push="never", urgency="high",
                                        topic="order-7")
    assert [s.user_id for s in sent] == users
    assert len({s.id for s in sent}) == 3
    assert len({s.idempotency_key for s in sent}) == 1
    for user, item in zip(users, sent, strict=True):
        assert [n["id"] for n in inbox(server, user)] == [item.id]


@pytest.mark.server
def test_a_given_key_replays_and_another_body_conflicts(server):
    user, key = unique("pc-key"), unique("order-shipped")
    client = make_client(server.url)
    first = client.send(user, "order", "Shipped", idempotency_key=key)
    again = client.send(user, "order", "Shipped", idempotency_key=key)
    assert [(s.id, s.replayed) for s in first] == [(first[0].id, False)]
    assert [(s.id, s.replayed) for s in again] == [(first[0].id, True)]
    with pytest.raises(IdempotencyConflict) as caught:
        client.send(user, "order", "Delivered", idempotency_key=key)
    assert (caught.value.status, caught.value.code) == (422, "idempotency_key_reused")
    assert caught.value.attempts == 1
    assert caught.value.idempotency_key == key
    assert len(inbox(server, user)) == 1


@pytest.mark.server
@pytest.mark.parametrize("fields, status, code", [
    ({"title": "   "}, 400, "validation_error"),
    ({"type": "t" * 65}, 400, "validation_error"),
    ({"user_ids": []}, 400, "validation_error"),
    ({"push": "sometimes"}, 400, "validation_error"),
    ({"data": {"blob": "x" * 300_000}}, 413, "payload_too_large"),
])
def test_refusals_are_validation_errors_and_not_retried(server, fields, status, code):
    user = unique("pc-invalid")
    args = {"user_ids": user, "type": "test", "title": "hi", **fields}
    with pytest.raises(ValidationError) as caught:
        make_client(server.url).send(args.pop("user_ids"), args.pop("type"),
                                     args.pop("title"), **args)
    error = caught.value
    assert (error.status, error.code, error.attempts) == (status, code, 1)
    assert error.message and str(error).startswith(f"HTTP {status} {code}: ")
    assert inbox(server, user) == []


def assert_no_key_in(error: BaseException, *keys: str) -> None:
    shown = [str(error), repr(error), repr(error.args), getattr(error, "message", ""),
             "".join(traceback.format_exception(type(error), error, error.__traceback__))]
    for key in keys:
        for text in shown:
            assert key not in text


@pytest.mark.server
def test_a_wrong_key_is_an_auth_error_that_shows_no_key(server):
    wrong = "wrong-producer-key-" + "z" * 24
    client = NotifyClient(server.url, wrong, backoff=0.05)
    with pytest.raises(AuthError) as caught:
        client.send(unique("pc-auth"), "test", "hi")
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (
        401, "api_key_invalid", 1)
    assert isinstance(caught.value, NotifyError)
    assert_no_key_in(caught.value, wrong, SERVER_API_KEY)
    assert wrong not in repr(client) and wrong not in str(vars(caught.value))


# -- send_many: the bulk route on the real server ---------------------------------------

@pytest.mark.server
def test_send_many_answers_each_notification_in_order(server):
    users = [unique("pc-bulk") for _ in range(3)]
    results = make_client(server.url).send_many([
        {"user_id": users[0], "type": "comment", "title": "first", "data": {"n": 1}},
        {"user_ids": [users[1], users[2], users[1]], "type": "order", "title": "both",
         "push": "never"},
        {"user_id": users[0], "type": "comment", "title": "last", "body": "b"},
    ])
    assert [[s.user_id for s in sent] for sent in results] == [
        [users[0]], [users[1], users[2]], [users[0]]]
    assert all(isinstance(s, Sent) and not s.replayed for sent in results for s in sent)
    assert len({s.idempotency_key for sent in results for s in sent}) == 1
    assert [(n["id"], n["title"], n["data"]) for n in inbox(server, users[0])] == [
        (results[2][0].id, "last", {}), (results[0][0].id, "first", {"n": 1})]
    assert [n["id"] for n in inbox(server, users[2])] == [results[1][1].id]


@pytest.mark.server
def test_send_many_with_a_key_replays_and_another_body_conflicts(server):
    user, key = unique("pc-bulk-key"), unique("batch")
    client = make_client(server.url)
    batch = [{"user_id": user, "type": "t", "title": "one"},
             {"user_id": user, "type": "t", "title": "two"}]
    first = client.send_many(batch, idempotency_key=key)
    again = client.send_many(batch, idempotency_key=key)
    assert [[(s.id, s.replayed) for s in sent] for sent in again] == [
        [(sent[0].id, True)] for sent in first]
    with pytest.raises(IdempotencyConflict) as caught:
        client.send_many(batch[:1], idempotency_key=key)
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (
        422, "idempotency_key_reused", 1)
    assert len(inbox(server, user)) == 2


@pytest.mark.server
def test_send_many_refusal_names_each_bad_notification_and_stores_none(server):
    user = unique("pc-bulk-bad")
    batch = [{"user_id": user, "type": "t", "title": "fine"},
             {"user_id": user, "type": "t"},
             {"user_id": user, "type": "t", "title": "fine too"},
             {"user_id": user, "type": "t", "title": "x", "push": "sometimes"}]
    with pytest.raises(ValidationError) as caught:
        make_client(server.url).send_many(batch)
    error = caught.value
    assert (error.status, error.code, error.attempts) == (400, "validation_error", 1)
    assert [(i["index"], i["code"]) for i in error.items] == [(1, "validation_error"),
                                                              (3, "validation_error")]
    assert "title" in error.items[0]["message"] and "push" in error.items[1]["message"]
    with pytest.raises(ValidationError) as too_many:
        make_client(server.url).send_many([{"user_id": user, "type": "t", "title": "x"}] * 1001)
    assert too_many.value.items is None and "1000" in too_many.value.message
    assert inbox(server, user) == []


@pytest.mark.server
def test_send_many_lost_answer_is_retried_and_stored_once(server):
    user = unique("pc-bulk-lost")
    proxy = LosingProxy(server.port, drop=1)
    try:
        results = make_client(proxy.url).send_many(
            [{"user_id": user, "type": "t", "title": f"n{i}"} for i in range(3)])
    finally:
        proxy.close()
    assert len(proxy.requests) == 2
    assert proxy.requests[0]["idempotency-key"] == proxy.requests[1]["idempotency-key"]
    assert [[s.replayed for s in sent] for sent in results] == [[True]] * 3
    stored = answer_body(proxy.answers[0])["results"]
    assert [sent[0].id for sent in results] == [r["notifications"][0]["id"] for r in stored]
    assert sorted(n["title"] for n in inbox(server, user)) == ["n0", "n1", "n2"]


class LosingProxy:
    """A loopback TCP proxy in front of the server. For the first ``drop`` connections it
    forwards the request, reads the server's whole answer, then closes the client's
    connection without relaying it (``cut="all"``) or after relaying all but its last
    bytes (``cut="tail"``): the server stored, the client saw its connection dropped.
    Later connections are relayed as they are."""

    def __init__(self, upstream_port: int, drop: int = 1, cut: str = "all") -> None:
        self.upstream_port, self.drop, self.cut = upstream_port, drop, cut
        self.requests: list[dict[str, str]] = []
        self.answers: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            request = read_http_request(conn)
            head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, v in (line.split(":", 1) for line in head[1:])}
            with socket.create_connection(("127.0.0.1", self.upstream_port), 10) as up:
                up.sendall(request)
                answer = b""
                while chunk := up.recv(65536):  # the client sent Connection: close
                    answer += chunk
            with self.lock:
                self.requests.append(headers)
                self.answers.append(answer)
                dropping = self.drop > 0
                self.drop -= dropping
            if not dropping:
                conn.sendall(answer)
            elif self.cut == "tail":
                conn.sendall(answer[:-5])

    def close(self) -> None:
        self.listener.close()


def read_http_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def answer_body(raw: bytes) -> dict:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


@pytest.mark.server
@pytest.mark.parametrize("cut, failure", [
    ("all", "RemoteDisconnected"),  # closed before the status line
    ("tail", "IncompleteRead"),  # closed in the middle of the body
])
def test_a_lost_answer_is_retried_with_the_same_key_and_stored_once(server, caplog, cut,
                                                                     failure):
    caplog.set_level(logging.INFO, logger="notify_client")
    user = unique("pc-lost")
    proxy = LosingProxy(server.port, drop=1, cut=cut)
    try:
        sent = make_client(proxy.url).send(user, "order", "Shipped once", data={"n": 1})
    finally:
        proxy.close()
    assert len(proxy.requests) == 2
    first_key = proxy.requests[0]["idempotency-key"]
    assert first_key and proxy.requests[1]["idempotency-key"] == first_key
    assert sent[0].idempotency_key == first_key
    # The first answer, which the client never saw, was a fresh store...
    assert proxy.answers[0].startswith(b"HTTP/1.1 201")
    assert b"idempotent-replayed" not in proxy.answers[0].lower()
    stored_id = answer_body(proxy.answers[0])["notifications"][0]["id"]
    # ...and the retry got the stored answer back.
    assert b"idempotent-replayed: true" in proxy.answers[1].lower()
    assert [(s.user_id, s.id, s.replayed) for s in sent] == [(user, stored_id, True)]
    assert [(n["id"], n["title"]) for n in inbox(server, user)] == [(stored_id, "Shipped once")]
    # The client saw a connection error, not an answer, and said so when it retried.
    [retry] = [r.getMessage() for r in caplog.records if "attempt 2 of" in r.getMessage()]
    assert f"no answer connection_error: {failure}" in retry


@pytest.mark.server
@pytest.mark.slow
def test_installs_into_a_fresh_venv_without_the_server(server, tmp_path):
    """``pip install ./clients/python`` into a new venv: nothing of this server's
    requirements comes along, and the installed package (not the source tree) sends."""
    source = tmp_path / "src-copy"
    shutil.copytree(PACKAGE_DIR, source,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    python = str(venv / "bin" / "python")

    def pip(*args: str) -> None:
        done = subprocess.run([python, "-m", "pip", "install", "-q", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr

    # The only step that reads a package index: a setuptools that builds wheels by itself
    # (a new venv's setuptools 65 needs the separate `wheel` package). A no-op when the
    # venv already has one.
    pip("setuptools>=70.1")
    # Then offline: --no-index would fail on any dependency the package declared.
    pip("--no-index", "--no-build-isolation", str(source))

    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], env=env,
                            capture_output=True, text=True, check=True, timeout=120)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert names <= {"pip", "setuptools", "wheel", "notify-client"}, names

    user = unique("pc-venv")
    script = (
        "import importlib.util, json, os, sys\n"
        "import notify_client\n"
        "from notify_client import NotifyClient\n"
        "root = os.path.dirname(notify_client.__file__)\n"
        "sent = NotifyClient(sys.argv[1], os.environ['PRODUCER_KEY']).send(sys.argv[2], 'test',"
        " 'from a fresh venv')\n"
        "print(json.dumps({'file': notify_client.__file__,"
        " 'typed': os.path.exists(os.path.join(root, 'py.typed')),"
        " 'flask': importlib.util.find_spec('flask') is not None,"
        " 'requests': importlib.util.find_spec('requests') is not None,"
        " 'sent': [[s.user_id, s.id] for s in sent]}))\n"
    )
    done = subprocess.run([python, "-c", script, server.url, user], cwd=tmp_path,
                          env={**env, "PRODUCER_KEY": SERVER_API_KEY},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert Path(report["file"]).is_relative_to(venv)
    assert report["typed"] is True
    assert report["flask"] is False and report["requests"] is False
    assert [n["id"] for n in inbox(server, user)] == [report["sent"][0][1]]


# -- a scripted endpoint --------------------------------------------------------------------

class Scripted:
    """A loopback HTTP endpoint that answers POSTs from a script of
    ``(status, headers, body, delay)`` steps (the last one repeats) and records each
    request's arrival (monotonic and wall clock) and headers."""

    def __init__(self, steps: list[tuple]) -> None:
        self.steps = list(steps)
        self.seen: list[dict] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                arrived, wall = time.monotonic(), time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                scripted.seen.append({"at": arrived, "wall": wall, "body": body,
                                      "path": self.path,
                                      "headers": {k.lower(): v for k, v in self.headers.items()}})
                step = scripted.steps.pop(0) if len(scripted.steps) > 1 else scripted.steps[0]
                status, headers, payload, delay = (*step, 0)[:4]
                time.sleep(delay)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that timed out and left

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def keys(self) -> list[str]:
        return [s["headers"].get("idempotency-key") for s in self.seen]

    def gaps(self) -> list[float]:
        return [b["at"] - a["at"] for a, b in zip(self.seen, self.seen[1:], strict=False)]


@pytest.fixture
def scripted():
    made: list[Scripted] = []

    def _make(*steps: tuple) -> Scripted:
        endpoint = Scripted(list(steps))
        made.append(endpoint)
        return endpoint

    yield _make
    for endpoint in made:
        endpoint.httpd.shutdown()
        endpoint.httpd.server_close()


def error(code: str, message: str = "scripted") -> dict:
    return {"error": {"code": code, "message": message}}


CREATED = (201, {"Content-Type": "application/json"}, OK_BODY)


def test_429_waits_for_retry_after_seconds(scripted):
    endpoint = scripted((429, {"Retry-After": "1"}, error("rate_limited")), CREATED)
    sent = make_client(endpoint.url).send("alice", "test", "hi")
    assert sent == [Sent("alice", 7, False, endpoint.keys()[0])]
    assert len(endpoint.seen) == 2 and len(set(endpoint.keys())) == 1
    [gap] = endpoint.gaps()
    assert 1.0 <= gap < 1.0 + SLACK


def test_429_waits_until_a_retry_after_date(scripted):
    until = int(time.time()) + 2
    endpoint = scripted((429, {"Retry-After": email.utils.formatdate(until, usegmt=True)},
                         error("rate_limited")), CREATED)
    make_client(endpoint.url).send("alice", "test", "hi")
    assert len(endpoint.seen) == 2 and len(set(endpoint.keys())) == 1
    assert endpoint.seen[1]["wall"] >= until - 0.01
    assert endpoint.gaps()[0] < 2.0 + SLACK


def test_503_database_unavailable_is_retried_after_retry_after(scripted):
    unavailable = (503, {"Retry-After": "1"}, error("database_unavailable"))
    endpoint = scripted(unavailable, unavailable, CREATED)
    sent = make_client(endpoint.url).send(["alice", "bob"], "test", "hi")
    assert [s.id for s in sent] == [7]
    assert len(endpoint.seen) == 3 and len(set(endpoint.keys())) == 1
    assert len({s["body"] for s in endpoint.seen}) == 1  # the same body every time
    assert all(1.0 <= gap < 1.0 + SLACK for gap in endpoint.gaps())


def test_without_retry_after_the_wait_doubles_with_jitter(scripted):
    unavailable = (503, {}, error("database_unavailable"))
    gateway = (502, {"Content-Type": "text/html"}, b"<html>Bad gateway</html>")
    endpoint = scripted(unavailable, gateway, unavailable, CREATED)
    make_client(endpoint.url, backoff=0.2, max_backoff=10).send("alice", "test", "hi")
    assert len(endpoint.seen) == 4 and len(set(endpoint.keys())) == 1
    # Equal jitter: the wait before attempt n + 1 is between half and all of 0.2 * 2**(n-1).
    for gap, ceiling in zip(endpoint.gaps(), [0.2, 0.4, 0.8], strict=True):
        assert ceiling / 2 <= gap < ceiling + SLACK


def test_429_on_every_attempt_is_rate_limited(scripted):
    endpoint = scripted((429, {"Retry-After": "0"}, error("rate_limited", "slow down")))
    with pytest.raises(RateLimited) as caught:
        make_client(endpoint.url, max_attempts=3).send("alice", "test", "hi")
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (
        429, "rate_limited", 3)
    assert caught.value.retry_after == 0
    assert caught.value.idempotency_key == endpoint.keys()[0]
    assert len(endpoint.seen) == 3 and len(set(endpoint.keys())) == 1


def test_a_retry_after_past_the_deadline_gives_up_without_waiting(scripted):
    endpoint = scripted((429, {"Retry-After": "120"}, error("rate_limited")))
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        make_client(endpoint.url, deadline=5).send("alice", "test", "hi")
    assert time.monotonic() - started < 5
    assert caught.value.retry_after == 120 and caught.value.attempts == 1
    assert "deadline" in caught.value.message
    assert len(endpoint.seen) == 1


@pytest.mark.parametrize("step, kind, code", [
    ((503, {}, error("producer_disabled")), Unavailable, "producer_disabled"),
    ((503, {}, error("push_disabled")), Unavailable, "push_disabled"),
    ((500, {}, error("internal_error")), ServerError, "internal_error"),
    ((415, {}, error("unsupported_media_type")), ValidationError, "unsupported_media_type"),
    ((422, {}, error("unprocessable")), ValidationError, "unprocessable"),
    ((302, {"Location": "https://elsewhere.example/"}, b""), ServerError, "redirect"),
    ((201, {}, b"<html>not json</html>"), ServerError, "bad_response"),
    ((404, {}, b"Not Found"), ServerError, "http_error"),
])
def test_answers_that_retrying_cannot_fix_are_raised_at_once(scripted, step, kind, code):
    endpoint = scripted(step)
    with pytest.raises(kind) as caught:
        make_client(endpoint.url).send("alice", "test", "hi")
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (
        step[0], code, 1)
    assert len(endpoint.seen) == 1


def test_a_timed_out_attempt_is_retried_with_the_same_key(scripted):
    endpoint = scripted((201, {}, OK_BODY, 2.0), CREATED)
    sent = make_client(endpoint.url, timeout=0.5).send("alice", "test", "hi")
    assert [s.id for s in sent] == [7]
    assert len(endpoint.seen) == 2 and len(set(endpoint.keys())) == 1


def test_connection_refused_is_unavailable_after_every_attempt():
    port = free_port()  # nothing listens there
    with pytest.raises(Unavailable) as caught:
        make_client(f"http://127.0.0.1:{port}", max_attempts=3).send("alice", "test", "hi")
    error_ = caught.value
    assert (error_.status, error_.code, error_.attempts) == (None, "connection_error", 3)
    assert isinstance(error_.__cause__, OSError)
    assert str(error_).startswith("no answer connection_error: ")
    assert_no_key_in(error_, SERVER_API_KEY)


def test_a_server_that_echoes_the_key_does_not_get_it_into_the_error(scripted):
    key = "echoed-producer-key-" + "q" * 20
    endpoint = scripted((401, {}, error("api_key_invalid", f"bad key Bearer {key}")))
    with pytest.raises(AuthError) as caught:
        NotifyClient(endpoint.url, key).send("alice", "test", "hi")
    assert endpoint.seen[0]["headers"]["authorization"] == f"Bearer {key}"
    assert "[redacted]" in caught.value.message
    assert_no_key_in(caught.value, key)


def test_headers_and_body_of_a_request(scripted):
    endpoint = scripted(CREATED)
    make_client(endpoint.url).send(7, "test", "hi", None, {"é": [1, None]}, urgency="low",
                                   idempotency_key="order-1234-shipped")
    [seen] = endpoint.seen
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["idempotency-key"] == "order-1234-shipped"
    assert seen["headers"]["user-agent"].startswith("notify-client/")
    assert json.loads(seen["body"]) == {"user_id": 7, "type": "test", "title": "hi",
                                        "data": {"é": [1, None]}, "urgency": "low"}


@pytest.mark.parametrize("call", [
    lambda c: c.send("alice", "test", "hi", data={"x": float("nan")}),
    lambda c: c.send("alice", "test", "hi", data={"x": object()}),
    lambda c: c.send("alice", "test", "hi", idempotency_key=""),
    lambda c: c.send("alice", "test", "hi", idempotency_key="k" * 256),
    lambda c: c.send("alice", "test", "hi", idempotency_key="clé"),
    lambda c: c.send({"alice": 1}, "test", "hi"),
])
def test_arguments_that_cannot_be_sent_fail_before_sending(scripted, call):
    endpoint = scripted(CREATED)
    with pytest.raises((ValueError, TypeError)):
        call(make_client(endpoint.url))
    assert endpoint.seen == []


def test_constructor_arguments_are_checked_without_echoing_the_key():
    secret = "almost-a-key-" + "y" * 20
    for base_url in ("notify.example.com", "ftp://notify.example.com", "https://x.example/?a=1"):
        with pytest.raises(ValueError):
            NotifyClient(base_url, SERVER_API_KEY)
    for api_key in ("", f"{secret}\n", f" {secret}", f"{secret}é"):
        with pytest.raises(ValueError) as caught:
            NotifyClient("https://notify.example.com", api_key)
        assert secret not in str(caught.value)
    client = NotifyClient("https://notify.example.com/", SERVER_API_KEY)
    assert client.url == "https://notify.example.com/api/notifications"
    assert SERVER_API_KEY not in repr(client) and SERVER_API_KEY not in str(client)


@pytest.mark.parametrize("value, seconds", [
    ("5", 5.0), (" 2 ", 2.0), ("1.5", 1.5), ("0", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: at once
    (None, None), ("", None), ("soon", None), ("-3", None), ("inf", None), ("1e3", None),
])
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_reads_an_http_date():
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == 30.0


BULK_CREATED = (201, {"Content-Type": "application/json"},
                {"results": [{"notifications": [{"id": 7, "user_id": "alice"}]},
                             {"notifications": [{"id": 8, "user_id": "bob"},
                                                {"id": 9, "user_id": "carol"}]}]})
BATCH = [{"user_id": "alice", "type": "t", "title": "a"},
         {"user_ids": ["bob", "carol"], "type": "t", "title": "bc", "data": {"é": 1}}]


def test_send_many_posts_the_batch_to_the_bulk_route_and_retries_it_whole(scripted):
    unavailable = (503, {"Retry-After": "0"}, error("database_unavailable"))
    endpoint = scripted(unavailable, BULK_CREATED)
    results = make_client(endpoint.url).send_many(BATCH, idempotency_key="batch-7")
    key = "batch-7"
    assert results == [[Sent("alice", 7, False, key)],
                       [Sent("bob", 8, False, key), Sent("carol", 9, False, key)]]
    assert [s["path"] for s in endpoint.seen] == ["/api/notifications/bulk"] * 2
    assert endpoint.keys() == [key, key]
    assert len({s["body"] for s in endpoint.seen}) == 1
    assert json.loads(endpoint.seen[0]["body"]) == {"notifications": BATCH}


@pytest.mark.parametrize("payload", [
    {"results": [{"notifications": [{"id": 7, "user_id": "alice"}]}]},  # one result short
    {"notifications": [{"id": 7, "user_id": "alice"}]},  # the single route's shape
    {"results": {"notifications": []}},
])
def test_send_many_refuses_an_answer_that_is_not_one_result_per_notification(scripted,
                                                                             payload):
    endpoint = scripted((201, {}, payload))
    with pytest.raises(ServerError) as caught:
        make_client(endpoint.url).send_many(BATCH)
    assert (caught.value.status, caught.value.code) == (201, "bad_response")
    assert len(endpoint.seen) == 1


def test_send_many_error_items_are_kept_and_scrubbed(scripted):
    key = "echoed-producer-key-" + "w" * 20
    items = [{"index": 1, "code": "validation_error", "message": f"title {key}"}]
    endpoint = scripted((400, {}, {"error": {**error("validation_error")["error"],
                                             "items": items}}))
    with pytest.raises(ValidationError) as caught:
        NotifyClient(endpoint.url, key).send_many(BATCH)
    assert [(i["index"], i["code"]) for i in caught.value.items] == [(1, "validation_error")]
    assert_no_key_in(caught.value, key)
    assert key not in str(caught.value.items)


@pytest.mark.parametrize("call", [
    lambda c: c.send_many({"user_id": "alice", "type": "t", "title": "x"}),
    lambda c: c.send_many("alice"),
    lambda c: c.send_many([["alice"]]),
    lambda c: c.send_many([{"user_id": "a", "type": "t", "title": "x",
                            "data": {"x": float("nan")}}]),
    lambda c: c.send_many(BATCH, idempotency_key="k" * 256),
])
def test_send_many_arguments_that_cannot_be_sent_fail_before_sending(scripted, call):
    endpoint = scripted(BULK_CREATED)
    with pytest.raises((ValueError, TypeError)):
        call(make_client(endpoint.url))
    assert endpoint.seen == []
