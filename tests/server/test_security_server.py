"""Security against a real server: gunicorn's eventlet worker on a loopback port, in
production mode, with the Socket.IO and Engine.IO loggers and the access log on.

- headers, Server disclosure, 429 and connection caps over the wire;
- raw Engine.IO abuse (bad packets on polling and WebSocket, overlapping polls, a
  second WebSocket per session, unknown namespaces, junk requests): answered with
  400s or closes, never a traceback, and the server stays up;
- last, the whole output of the run is searched for every secret and token used.
"""

from __future__ import annotations

import json
import re
import socket as pysocket
import threading
import time

import jwt
import pytest
import requests
import socketio
import websocket

from tests.support.clients import ORIGIN, Recorder
from tests.support.servers import gunicorn, migrate, server_env

pytestmark = pytest.mark.server

JWT_SECRET = "sec-test-jwt-" + "j" * 40
API_KEY = "sec-test-api-key-" + "p" * 30
USED_TOKENS: list[str] = []  # every token this module sends; none may reach the log


def mint(user_id: str, ttl: int = 3600) -> str:
    now = int(time.time())
    token = jwt.encode({"sub": user_id, "iat": now - 5, "exp": now + ttl}, JWT_SECRET,
                       algorithm="HS256")
    USED_TOKENS.append(token)
    return token


@pytest.fixture(scope="module", params=["eventlet", "gevent"])
def server(request, tmp_path_factory):
    """The Procfile's eventlet worker, and gevent, the maintained alternative."""
    worker = request.param
    tmp = tmp_path_factory.mktemp(f"security-server-{worker}")
    env = server_env(tmp, ASYNC_MODE=worker, JWT_SECRET_KEY=JWT_SECRET, NOTIFY_API_KEY=API_KEY,
                     SOCKETIO_LOGGER="1", TRUSTED_PROXIES="127.0.0.1",
                     CONNECT_RATE_PER_IP="4", MAX_SOCKETS_PER_USER="2",
                     RATE_LIMIT_HTTP="20/minute", PING_INTERVAL="2", PING_TIMEOUT="3",
                     MAX_HTTP_BUFFER_SIZE="4096")
    migrate(env)
    proc = gunicorn(tmp, env, worker=worker, extra=["--access-logfile", "-"],
                    name="security").start()
    proc.worker = worker
    yield proc
    proc.stop()


_ips = iter(range(1, 250 * 250))


def new_ip() -> str:
    """A client address of its own per test, passed through the trusted proxy hop,
    so the per-address limits of one test never spill into another."""
    n = next(_ips)
    return f"10.99.{n // 250}.{n % 250 + 1}"


def fresh() -> dict[str, str]:
    """Headers for a raw Engine.IO request from an address of its own."""
    return {"Origin": ORIGIN, "X-Forwarded-For": new_ip()}


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[:500]


def healthy(server) -> None:
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


# ---------------------------------------------------------------- HTTP hygiene

def test_security_headers_and_no_server_version(server):
    eio = server.url + "/socket.io/?EIO=4&transport=polling"
    responses = [
        requests.get(server.url + "/healthz", timeout=5),
        requests.get(server.url + "/api/notifications", timeout=5),  # 401
        requests.get(server.url + "/nope", timeout=5),  # 404
        requests.get(eio, headers=fresh(), timeout=5),  # Engine.IO handshake
        requests.get(eio + "&sid=unknown", headers={"Origin": ORIGIN}, timeout=5),  # 400
    ]
    for response in responses:
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        host = f"127.0.0.1:{server.port}"
        assert f"connect-src 'self' ws://{host} wss://{host}" in \
            headers["Content-Security-Policy"]
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        assert not re.search(r"\d", headers.get("Server", "")), headers.get("Server")
        no_traceback(response.text)


def test_http_rate_limit_over_the_wire(server):
    ip, token = new_ip(), mint("limited")
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": ip}
    codes = [requests.get(server.url + "/api/notifications/unread-count", headers=headers,
                          timeout=5).status_code for _ in range(21)]
    assert codes[:20] == [200] * 20
    last = requests.get(server.url + "/api/notifications/unread-count", headers=headers,
                        timeout=5)
    assert last.status_code == 429
    assert last.json()["error"]["code"] == "rate_limited"
    assert int(last.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_cross_site_websocket_hijacking_is_refused(server, transport):
    """A page on another site opening a socket as the user, on either transport."""
    hijack = Recorder(origin="https://evil.example")
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            hijack.connect(server.url, auth={"token": mint("victim")}, transports=[transport],
                           headers={"X-Forwarded-For": new_ip()})
        assert hijack.of("auth_success") == []
    finally:
        hijack.disconnect()
    legit = Recorder().connect(server.url, auth={"token": mint("victim")},
                               transports=[transport], headers={"X-Forwarded-For": new_ip()})
    try:
        assert legit.wait_for("auth_success")[0]["user_id"] == "victim"
    finally:
        legit.disconnect()


# ---------------------------------------------------------------- connection caps

def refused(server, auth, ip, transports=("websocket",)) -> object:
    recorder = Recorder()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            recorder.connect(server.url, auth=auth, transports=list(transports),
                             headers={"X-Forwarded-For": ip})
        return recorder.connect_error
    finally:
        recorder.disconnect()


def code_of(error: object) -> str:
    if isinstance(error, dict) and "data" in error:
        error = error["data"]
    return error["code"]


def test_sockets_per_user_cap_over_the_wire(server):
    ip, token = new_ip(), mint("capped")
    made = [Recorder().connect(server.url, auth={"token": token}, transports=["websocket"],
                               headers={"X-Forwarded-For": ip}) for _ in range(2)]
    try:
        assert code_of(refused(server, {"token": token}, ip)) == "too_many_connections"
    finally:
        for recorder in made:
            recorder.disconnect()


def test_connection_attempts_per_ip_over_the_wire(server):
    ip = new_ip()
    for _ in range(4):
        assert code_of(refused(server, {"token": "not-a-token"}, ip)) == "token_invalid"
    assert code_of(refused(server, {"token": mint("eve")}, ip)) == "too_many_attempts"
    # another address, and so another budget: X-Forwarded-For from the trusted hop
    assert code_of(refused(server, {"token": "not-a-token"}, new_ip())) == "token_invalid"


def test_an_event_flood_is_acked_then_disconnected(server):
    """The defaults over the wire: a burst of 20, then rate_limited acks, then after 50
    refusals in a row the server ends the socket."""
    flooder = Recorder().connect(server.url, auth={"token": mint("flooder")},
                                 transports=["websocket"], headers={"X-Forwarded-For": new_ip()})
    acks: list[dict] = []
    try:
        flooder.wait_for("auth_success")
        for _ in range(120):
            if not flooder.client.connected:
                break
            flooder.client.emit("sync", {"after_id": 0}, callback=acks.append)
        deadline = time.monotonic() + 10
        while flooder.client.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not flooder.client.connected
        codes = [a["error"]["code"] if "error" in a else "ok" for a in acks]
        assert codes.count("ok") >= 20 and "rate_limited" in codes
    finally:
        flooder.disconnect()
    healthy(server)


# ---------------------------------------------------------------- raw Engine.IO


def test_engineio_handshake_flood_gets_429(server):
    """Bare Engine.IO sessions (no Socket.IO connect): twice CONNECT_RATE_PER_IP."""
    headers = fresh()
    codes = [requests.get(eio_url(server), headers=headers, timeout=5).status_code
             for _ in range(9)]
    assert codes == [200] * 8 + [429]

def eio_url(server, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"EIO": "4", "transport": "polling",
                                               **params}.items())
    return f"{server.url}/socket.io/?{query}"


def handshake(server) -> str:
    response = requests.get(eio_url(server), headers=fresh(), timeout=5)
    assert response.status_code == 200
    return json.loads(response.text[1:])["sid"]


@pytest.mark.parametrize("body", [
    b"9", b"2", b"6", b"garbage", b"\xff\xfe\x00", b"4hi\x1e\x1e", b"\x1e",
    b"x" * 5000,  # over MAX_HTTP_BUFFER_SIZE (4096)
])
def test_invalid_polling_packets_get_4xx_quickly(server, body):
    sid = handshake(server)
    started = time.monotonic()
    response = requests.post(eio_url(server, sid=sid), data=body,
                             headers={"Origin": ORIGIN}, timeout=10)
    assert response.status_code in (400, 413)
    assert time.monotonic() - started < 3  # python-engineio alone hangs here for good
    no_traceback(response.text)
    healthy(server)


@pytest.mark.parametrize("body", [b"4{bad json", b'40{"token": 1}', b"42[", b"4[[[[[[[[",
                                  b"40/admin,{}", b"1"])
def test_odd_but_well_framed_packets_are_survived(server, body):
    sid = handshake(server)
    response = requests.post(eio_url(server, sid=sid), data=body,
                             headers={"Origin": ORIGIN}, timeout=10)
    assert response.status_code in (200, 400)
    no_traceback(response.text)
    healthy(server)


@pytest.mark.parametrize("params", [
    {"EIO": "3"}, {"transport": "carrier-pigeon"}, {"sid": "no-such-session"},
    {"sid": "x" * 5000}, {"j": "abc"},
])
def test_bad_handshakes_are_400(server, params):
    response = requests.get(eio_url(server, **params), headers=fresh(), timeout=5)
    assert response.status_code == 400
    no_traceback(response.text)


def test_concurrent_long_polls_on_one_session(server):
    sid = handshake(server)
    results: list[int] = []

    def poll() -> None:
        response = requests.get(eio_url(server, sid=sid), headers={"Origin": ORIGIN},
                                timeout=10)
        no_traceback(response.text)
        results.append(response.status_code)

    threads = [threading.Thread(target=poll) for _ in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(15)
    assert sorted(results) == [200, 400, 400]
    healthy(server)


def ws_url(server, sid: str | None = None) -> str:
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    return url + (f"&sid={sid}" if sid else "")


def test_a_second_websocket_for_one_session_is_refused(server):
    sid = handshake(server)
    first = websocket.create_connection(ws_url(server, sid), origin=ORIGIN, timeout=5)
    try:
        first.send("2probe")
        assert first.recv() == "3probe"
        with pytest.raises(websocket.WebSocketBadStatusException) as excinfo:
            websocket.create_connection(ws_url(server, sid), origin=ORIGIN, timeout=5)
        assert excinfo.value.status_code == 400
        first.send("5")  # finish the upgrade: a later WebSocket is refused too
        time.sleep(0.2)
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(ws_url(server, sid), origin=ORIGIN, timeout=5)
    finally:
        first.close()
    healthy(server)


@pytest.mark.parametrize("frame", ["garbage", "4{bad", "9", "42[", "x" * 5000])
def test_invalid_websocket_frames_close_the_socket(server, frame):
    ws = websocket.create_connection(ws_url(server), origin=ORIGIN, timeout=5,
                                     header=[f"X-Forwarded-For: {new_ip()}"])
    try:
        assert ws.recv().startswith("0{")
        ws.send(frame)
        closed = False
        # Undecodable frames close at once; an unknown Engine.IO type ("9") is ignored
        # by python-engineio, and the session ends when this client, which answers no
        # ping, passes PING_INTERVAL + PING_TIMEOUT (5 s here).
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not closed:
            try:
                message = ws.recv()
                no_traceback(message or "")
                closed = message == ""
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                closed = True
            except websocket.WebSocketTimeoutException:
                break
        if frame.startswith("4"):
            # a well-framed message with a bad body: the socket may stay open
            pass
        else:
            assert closed, f"{frame[:10]!r} left the socket open"
    finally:
        ws.close()
    healthy(server)


def test_binary_junk_over_websocket(server):
    ws = websocket.create_connection(ws_url(server), origin=ORIGIN, timeout=5,
                                     header=[f"X-Forwarded-For: {new_ip()}"])
    try:
        ws.recv()
        ws.send_binary(b"\x00\xff\xfe" * 10)
        time.sleep(0.3)
    finally:
        ws.close()
    healthy(server)


def test_unknown_namespace_gets_connect_error(server):
    sid = handshake(server)
    requests.post(eio_url(server, sid=sid), data="40/admin,{}",
                  headers={"Origin": ORIGIN}, timeout=5)
    response = requests.get(eio_url(server, sid=sid), headers={"Origin": ORIGIN}, timeout=5)
    assert response.status_code == 200
    assert response.text.startswith("44/admin,")
    no_traceback(response.text)


def test_junk_http_requests_get_400_without_traceback(server):
    for junk in [b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: -1\r\n\r\n"]:
        with pysocket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(junk)
            answer = sock.recv(4096).decode("latin-1")
        assert answer.startswith("HTTP/1.1 400"), answer[:100]
        no_traceback(answer)
    healthy(server)


# ---------------------------------------------------------------- secrets in logs

def exercise(server) -> list[str]:
    """The suite's kinds of traffic, with a token or key in every place one travels."""
    sent: list[str] = []
    ip = new_ip()
    by_query, by_header, by_auth = mint("q-user"), mint("h-user"), mint("a-user")
    for transports in (["polling"], ["websocket"], ["polling", "websocket"]):
        Recorder().connect(server.url, query=f"token={by_query}", transports=transports,
                           headers={"X-Forwarded-For": new_ip()}).disconnect()
    Recorder().connect(server.url, headers={"Authorization": f"Bearer {by_header}",
                                            "X-Forwarded-For": new_ip()}).disconnect()
    Recorder().connect(server.url, auth={"token": by_auth},
                       headers={"X-Forwarded-For": new_ip()}).disconnect()
    expired = mint("late", ttl=-600)
    refused(server, {"token": expired}, new_ip(), transports=("polling",))
    raw = requests.get(eio_url(server, token=by_query), headers=fresh(), timeout=5)
    sid = json.loads(raw.text[1:])["sid"]
    requests.post(eio_url(server, sid=sid, token=by_query),
                  data="40" + json.dumps({"token": by_auth}), headers={"Origin": ORIGIN},
                  timeout=5)
    requests.get(eio_url(server, sid=sid, token=by_query), headers={"Origin": ORIGIN},
                 timeout=5)
    ws = websocket.create_connection(ws_url(server) + f"&token={by_query}", origin=ORIGIN,
                                     timeout=5, header=[f"X-Forwarded-For: {new_ip()}"])
    ws.recv()
    ws.send("garbage")  # makes gunicorn log "Error handling request <uri>"
    ws.close()
    producer = {"Authorization": f"Bearer {API_KEY}", "X-Forwarded-For": ip}
    requests.post(server.url + "/api/notifications", headers=producer, timeout=5,
                  json={"user_id": "a-user", "type": "t", "title": "hi"})
    requests.post(server.url + "/api/notifications", timeout=5, data="{bad json",
                  headers={**producer, "Content-Type": "application/json"})
    requests.post(server.url + "/api/notifications", timeout=5, data="a=b",
                  headers={**producer, "Content-Type": "application/x-www-form-urlencoded"})
    requests.post(server.url + f"/api/notifications?key={API_KEY}", timeout=5, json={},
                  headers={"Authorization": f"Bearer {API_KEY[:-1]}x", "X-Forwarded-For": ip})
    for token in (by_header, expired):
        requests.get(server.url + f"/api/notifications?token={token}", timeout=5,
                     headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": ip})
    sent.extend([by_query, by_header, by_auth, expired])
    return sent


def test_no_secret_reaches_any_log(server):
    exercise(server)
    time.sleep(0.5)  # let the worker's last lines reach the file
    output = server.output()
    assert "engineio.server" in output and "socketio.server" in output  # loggers were on
    assert '"GET /api/notifications' in output  # and the access log too
    assert '"token":"[redacted]"' in output  # tokens did reach a logger, redacted
    secrets = {"JWT secret": JWT_SECRET, "API key": API_KEY}
    for index, token in enumerate(USED_TOKENS):
        secrets[f"token {index}"] = token
        secrets[f"token {index} signature"] = token.rsplit(".", 1)[1]
    leaked = [name for name, value in secrets.items() if value in output]
    assert not leaked, f"found in the server output: {leaked}"
    assert len(USED_TOKENS) >= 5
