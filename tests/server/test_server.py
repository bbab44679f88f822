"""The service as deployed: real gunicorn processes (eventlet, and gevent beside it)
on loopback ports in production mode, with real Socket.IO clients."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time

import pytest
import requests
import socketio

from tests.support.clients import ORIGIN
from tests.support.servers import SERVER_API_KEY as API_KEY
from tests.support.servers import SERVER_JWT_SECRET as JWT_SECRET
from tests.support.servers import free_port, gunicorn, migrate, mint, notify, post, server_env

pytestmark = pytest.mark.server

@pytest.fixture(scope="module", params=["eventlet", "gevent"])
def server(request, tmp_path_factory):
    """One production-mode server per worker class, as the Procfile runs it."""
    worker = request.param
    tmp = tmp_path_factory.mktemp(f"server-{worker}")
    env = server_env(tmp, ASYNC_MODE=worker, TOKEN_SWEEP_INTERVAL="0.2")
    migrate(env)
    proc = gunicorn(tmp, env, worker=worker, extra=["--access-logfile", "-"]).start()
    proc.worker = worker
    yield proc
    proc.stop()


def test_healthz_reports_the_real_worker(server):
    body = requests.get(server.url + "/healthz", timeout=5).json()
    assert body["async_mode"] == server.worker
    assert body["monkey_patched"] is True
    assert body["environment"] == "production"


@pytest.mark.parametrize("transports, expected", [
    (["polling"], "polling"),
    (["websocket"], "websocket"),
    (["polling", "websocket"], "websocket"),
])
def test_connect_and_receive_on_each_transport(server, clients, transports, expected):
    user = f"user-{expected}-{len(transports)}-{server.worker}"
    recorder = clients().connect(server.url, auth={"token": mint(user)}, transports=transports)
    welcome = recorder.wait_for("auth_success")[0]
    assert welcome["user_id"] == user
    if len(transports) == 2:
        deadline = time.monotonic() + 5
        while recorder.transport != "websocket" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert recorder.transport == expected
    nid = notify(server, user, title=f"via {expected}")
    got = recorder.wait_for("notification")[0]
    assert (got["id"], got["title"]) == (nid, f"via {expected}")


def test_delivery_reaches_the_right_user_only(server, clients):
    alice = clients().connect(server.url, auth={"token": mint("rs-alice")})
    bob = clients().connect(server.url, auth={"token": mint("rs-bob")},
                            transports=["websocket"])
    alice.wait_for("auth_success"), bob.wait_for("auth_success")
    notify(server, "rs-bob", title="for bob")
    assert bob.wait_for("notification")[0]["title"] == "for bob"
    notify(server, "rs-alice", title="for alice")
    assert alice.wait_for("notification")[0]["title"] == "for alice"
    assert [n["title"] for n in bob.of("notification")] == ["for bob"]


@pytest.mark.parametrize("transports", [["polling"], ["websocket"]])
def test_foreign_origin_is_refused(server, clients, transports):
    recorder = clients(origin="https://evil.example")
    with pytest.raises(socketio.exceptions.ConnectionError):
        recorder.connect(server.url, auth={"token": mint("victim")}, transports=transports)
    assert not recorder.of("auth_success")


def test_foreign_origin_refused_before_the_handshake(server):
    polling = requests.get(server.url + "/socket.io/?EIO=4&transport=polling",
                           headers={"Origin": "https://evil.example"}, timeout=5)
    assert polling.status_code == 400
    assert "Access-Control-Allow-Origin" not in polling.headers
    status, _ = raw_websocket_handshake(server.port, origin="https://evil.example")
    assert status != 101


def test_allowed_origin_is_echoed_with_credentials(server):
    response = requests.get(server.url + "/socket.io/?EIO=4&transport=polling",
                            headers={"Origin": ORIGIN}, timeout=5)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


def raw_websocket_handshake(port: int, origin: str = ORIGIN,
                            extensions: str | None = None) -> tuple[int, dict[str, str]]:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1",
        f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", f"Origin: {origin}",
    ]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def test_websocket_compression_is_never_negotiated(server):
    status, headers = raw_websocket_handshake(
        server.port, extensions="permessage-deflate; client_max_window_bits")
    assert status == 101
    assert "sec-websocket-extensions" not in headers


@pytest.mark.parametrize("auth, code", [
    (None, "token_missing"),
    ({"token": "junk"}, "token_invalid"),
    ({"token": "EXPIRED"}, "token_expired"),
])
def test_refusal_codes_over_the_wire(server, clients, auth, code):
    if auth and auth["token"] == "EXPIRED":
        auth = {"token": mint("late", ttl=-120)}
    recorder = clients()
    with pytest.raises(socketio.exceptions.ConnectionError):
        recorder.connect(server.url, auth=auth, transports=["websocket"])
    assert recorder.connect_error == {"message": "unauthorized", "data": {"code": code}} or \
        recorder.connect_error == {"code": code}, recorder.connect_error


def test_reconnect_with_last_id_gets_exactly_the_missed_ones(server, clients):
    user = f"sleeper-{server.worker}"
    first = clients().connect(server.url, auth={"token": mint(user)})
    seen = notify(server, user)
    assert first.wait_for("notification")[0]["id"] == seen
    first.disconnect()
    missed = [notify(server, user, title=f"missed {i}") for i in range(5)]
    notify(server, "someone-else")
    back = clients().connect(server.url, auth={"token": mint(user), "last_id": seen})
    done = back.wait_for("sync_complete")[0]
    assert [n["id"] for n in back.of("notification")] == missed
    assert done == {"last_id": missed[-1], "replayed": 5, "has_more": False, "gap": False}


def test_token_expiry_disconnects_with_token_expired(server, clients):
    recorder = clients().connect(server.url, auth={"token": mint("brief", ttl=2)},
                                 transports=["websocket"])
    recorder.wait_for("auth_success")
    assert recorder.wait_for("token_expired", timeout=8) == [{"code": "token_expired"}]
    deadline = time.monotonic() + 5
    while recorder.client.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not recorder.client.connected


def test_mark_read_reaches_the_other_tab(server, clients):
    user = f"reader-{server.worker}"
    ids = [notify(server, user) for _ in range(2)]
    tab = clients().connect(server.url, auth={"token": mint(user)})
    phone = clients().connect(server.url, auth={"token": mint(user)}, transports=["websocket"])
    tab.wait_for("auth_success"), phone.wait_for("auth_success")
    ack = tab.client.call("mark_read", {"ids": ids[:1]}, timeout=5)
    assert ack == {"updated": 1, "unread_count": 1}
    assert phone.wait_for("unread_count") == [{"unread_count": 1}]
    bad = tab.client.call("mark_read", {"ids": "nope"}, timeout=5)
    assert bad["error"]["code"] == "validation_error"
    assert tab.client.connected


def test_no_secret_reaches_the_server_output(server, clients):
    token = mint("logged")
    clients().connect(server.url, query=f"token={token}", transports=["polling"])
    clients().connect(server.url, headers={"Authorization": f"Bearer {token}"},
                      transports=["websocket"])
    requests.get(server.url + f"/api/notifications?token={token}",
                 headers={"Authorization": f"Bearer {token}"}, timeout=5)
    post(server, {"user_id": "logged", "type": "t", "title": "x"})
    post(server, {"user_id": "logged"}, key=API_KEY + "-wrong")
    with pytest.raises(socketio.exceptions.ConnectionError):
        clients().connect(server.url, auth={"token": token + "x"})
    time.sleep(0.5)
    output = server.output()
    assert "/socket.io/" in output, "the access log should be on for this test"
    for secret in (token, token + "x", API_KEY, JWT_SECRET, token.split(".")[2]):
        assert secret not in output


def halted(tmp_path, env: dict[str, str], missing: str) -> tuple[int, str]:
    """Start gunicorn on ``env``, which lacks ``missing``: it must halt by itself, not
    respawn workers forever. Returns its exit status and output."""
    proc = gunicorn(tmp_path, env).start(wait=False)
    try:
        code = proc.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.stop()
        pytest.fail(f"gunicorn kept running (respawning workers) without {missing}")
    return code, proc.output()


def test_production_start_fails_without_the_secret(tmp_path):
    env = server_env(tmp_path)
    del env["JWT_SECRET_KEY"]
    code, output = halted(tmp_path, env, "JWT_SECRET_KEY")
    assert code != 0
    lines = [line for line in output.splitlines() if "configuration error" in line]
    assert lines == ["configuration error: " + lines[0].split("configuration error: ")[1]]
    assert "JWT_SECRET_KEY" in lines[0]
    assert output.count("Booting worker") == 1


@pytest.mark.parametrize("frontend", [None, "*", ""])
def test_production_start_fails_without_safe_origins(tmp_path, frontend):
    env = server_env(tmp_path)
    if frontend is None:
        del env["FRONTEND_URLS"]
    else:
        env["FRONTEND_URLS"] = frontend
    proc = gunicorn(tmp_path, env).start(wait=False)
    try:
        assert proc.proc.wait(timeout=30) != 0
    finally:
        proc.stop()
    assert "configuration error: FRONTEND_URLS" in proc.output()


def test_production_start_fails_without_a_database_url(tmp_path):
    """No silent SQLite file in the deploy's filesystem (Railway erases it on the next
    deploy): gunicorn halts with one line naming DATABASE_URL and what to set."""
    env = server_env(tmp_path)
    del env["DATABASE_URL"]
    code, output = halted(tmp_path, env, "DATABASE_URL")
    assert code == 4, output  # gunicorn's "App failed to load": the master halts
    lines = [line for line in output.splitlines() if "configuration error" in line]
    assert len(lines) == 1
    assert "configuration error: DATABASE_URL is required in production" in lines[0]
    assert "PostgreSQL" in lines[0] and "sqlite:////" in lines[0]
    assert "Traceback" not in output
    assert output.count("Booting worker") == 1
    assert not (tmp_path / "instance" / "notifications.db").exists()


def test_replay_survives_a_restart(tmp_path, clients):
    env = server_env(tmp_path)
    migrate(env)
    port = free_port()
    first = gunicorn(tmp_path, env, port=port, name="before").start()
    try:
        seen = notify(first, "restarter")
        missed = [notify(first, "restarter") for _ in range(3)]
    finally:
        first.stop()
    second = gunicorn(tmp_path, env, port=port, name="after").start()
    try:
        back = clients().connect(second.url, auth={"token": mint("restarter"), "last_id": seen})
        back.wait_for("sync_complete")
        assert [n["id"] for n in back.of("notification")] == missed
        later = notify(second, "restarter")
        assert later > missed[-1]
        assert back.wait_for("notification", count=4)[-1]["id"] == later
    finally:
        second.stop()
