"""The doctor against real servers on loopback, each scenario started here:
healthy gunicorn eventlet, the original incident's sync worker, a stock
Flask-SocketIO app (every origin, no auth), nginx without the upgrade headers, an
http front that redirects POST, compression left on, sessions split across two
processes (round-robin HAProxy, SO_REUSEPORT, and a sticky HAProxy), and the fix
the doctor names for that: WebSocket-only nodes on Redis behind round-robin HAProxy.
A healthy server logs no ERROR line while the doctor runs."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import jwt
import pytest
import requests

from tests.support.cluster import Cluster, HAProxy
from tests.support.cluster import wait_for as wait_until
from tests.support.loopback_http import LoopbackServer
from tests.support.servers import (
    ROOT,
    SERVER_API_KEY,
    VENV_BIN,
    ServerProcess,
    free_port,
    gunicorn,
    migrate,
    server_env,
)
from tests.support.services import REDIS_HOST, REDIS_PORT, in_ci, require_service
from utils.doctor import main
from utils.doctor.advice import SPLIT_FIX

pytestmark = pytest.mark.server

ALLOWED = "http://localhost:3000"  # server_env's FRONTEND_URLS
API_KEY = SERVER_API_KEY
TIMEOUT = "3"
# Push on, as a production deployment should run: the doctor's push check passes.
VAPID = {"VAPID_PRIVATE_KEY": "ZLRZ_j1X6lBNBAFb0hlOJA2uA79-TiDOIYwb4kwBBy8",
         "VAPID_SUBJECT": "mailto:doctor@example.com"}


def run_doctor(url: str, *args: str) -> tuple[int, dict]:
    out, err = io.StringIO(), io.StringIO()
    code = main([url, "--json", "--timeout", TIMEOUT, *args], out=out, err=err)
    return code, (json.loads(out.getvalue()) if out.getvalue() else {"stderr": err.getvalue()})


def error_lines(log: str) -> list[str]:
    """The lines a server logged at ERROR (its own format and gunicorn's)."""
    return [line for line in log.splitlines() if re.search(r"\bERROR\b", line)]


def checks(report: dict) -> dict[str, dict]:
    return {check["id"]: check for check in report["checks"]}


def statuses(report: dict) -> dict[str, str]:
    return {check["id"]: check["status"] for check in report["checks"]}


def make_token(env: dict[str, str], user: str = "doctor-user") -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, env["JWT_SECRET_KEY"],
                      algorithm="HS256")


def all_options(env: dict[str, str]) -> list[str]:
    """--origin, --token and --api-key: the doctor as a deployment's owner runs it."""
    return ["--origin", ALLOWED, "--token", make_token(env), "--api-key", API_KEY]


def doctor_while_up(server: ServerProcess, *args: str) -> tuple[int, dict]:
    """``run_doctor`` against ``server``, started for it and stopped after."""
    server.start()
    try:
        return run_doctor(server.url, *args)
    finally:
        server.stop()


def wait_for(url: str, timeout: float = 30) -> None:
    """Ready when the Engine.IO handshake answers (the stock app has no /healthz)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/socket.io/?EIO=4&transport=polling", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def app_server(tmp: Path, env: dict[str, str], module: str, own_config: bool = True
               ) -> ServerProcess:
    """gunicorn eventlet serving ``module``; ``own_config=False`` skips the repository's
    gunicorn.conf.py, whose hooks belong to this backend, not to a stock app."""
    port = free_port()
    config = []
    if not own_config:
        empty = tmp / "gunicorn.conf.py"
        empty.write_text("")
        config = ["--config", str(empty)]
    argv = [str(VENV_BIN / "gunicorn"), "--worker-class", "eventlet", "-w", "1", *config,
            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5", module]
    return ServerProcess(argv, env, port, tmp / f"{module.replace(':', '-')}-{port}.log")


@pytest.fixture(scope="module", params=["eventlet", "gevent"])
def healthy(request, tmp_path_factory):
    """The production set-up: the Procfile's gunicorn command, on the eventlet worker
    and on gevent."""
    tmp = tmp_path_factory.mktemp(f"doctor-healthy-{request.param}")
    env = server_env(tmp, ASYNC_MODE=request.param, **VAPID)
    migrate(env)
    server = gunicorn(tmp, env, worker=request.param).start()
    yield server, env
    server.stop()


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """A stock Flask-SocketIO app: cors_allowed_origins='*', no authentication."""
    tmp = tmp_path_factory.mktemp("doctor-stock")
    env = server_env(tmp)
    server = app_server(tmp, env, "tests.support.stock_socketio_app:app",
                        own_config=False).start(wait=False)
    try:
        wait_for(server.url)
        yield server
    finally:
        server.stop()


def test_healthy_server_passes_every_check(healthy):
    server, env = healthy
    code, report = run_doctor(server.url, *all_options(env))
    assert code == 0, report
    assert report["verdict"] == "pass"
    assert set(statuses(report).values()) == {"pass"}, statuses(report)
    found = checks(report)
    assert len(found) == 15
    assert found["push"]["evidence"].startswith("enabled; VAPID public key B")
    assert "8 of 8 sessions held" in found["split_sessions"]["evidence"]
    assert "as user doctor-user" in found["auth"]["evidence"]
    assert "polling" in found["round_trip"]["evidence"]
    assert "websocket" in found["round_trip"]["evidence"]
    assert found["server"]["data"]["async_mode"] == env["ASYNC_MODE"]


def test_a_run_on_a_healthy_server_logs_no_error(worker, tmp_path):
    """Issue 24, finding 9: nothing the doctor sends may put an ERROR line in a healthy
    server's log. A fresh server: python-engineio logs each kind of refusal at ERROR
    once per process, so one that already refused something would hide it."""
    env = server_env(tmp_path, ASYNC_MODE=worker, **VAPID)
    migrate(env)
    server = gunicorn(tmp_path, env, worker=worker).start()
    try:
        started = len(server.output())
        code, report = run_doctor(server.url, *all_options(env))
        time.sleep(0.5)  # the last requests' log lines
        logged = server.output()[started:]
    finally:
        server.stop()
    assert code == 0, report
    assert error_lines(logged) == [], logged


def test_table_output_marks_each_check_without_colour_off_a_tty(healthy):
    server, _env = healthy
    out, err = io.StringIO(), io.StringIO()
    code = main([server.url, "--timeout", TIMEOUT], out=out, err=err)
    text = out.getvalue()
    assert code == 0, text
    assert "✓ reachability" in text and "· auth with --token" in text
    assert "\033[" not in text and err.getvalue() == ""  # no colour, no progress line
    assert text.rstrip().endswith("exit 0")


def test_origin_missing_from_frontend_urls_fails_naming_the_variable(healthy):
    server, _env = healthy
    code, report = run_doctor(server.url, "--origin", "https://app.example.com")
    cors = checks(report)["cors"]
    assert code == 1
    assert cors["status"] == "fail"
    assert "FRONTEND_URLS=https://app.example.com" in cors["fix"]


def test_sync_worker_in_threading_mode_fails_naming_worker_and_websocket(tmp_path):
    """The original incident: ``gunicorn -w 1 app:app`` (sync worker), threading mode."""
    env = server_env(tmp_path, ASYNC_MODE="threading")
    migrate(env)
    code, report = doctor_while_up(gunicorn(tmp_path, env, worker="sync"), *all_options(env))
    found = checks(report)
    assert code == 1
    assert found["concurrency"]["status"] == "fail"
    assert "sync worker" in found["concurrency"]["evidence"]
    assert "--worker-class eventlet" in found["concurrency"]["fix"]
    assert found["websocket"]["status"] == "fail"
    assert "WebSocket is unusable" in found["websocket"]["evidence"]
    assert found["server"]["status"] == "fail"
    assert "threading" in found["server"]["evidence"]


@pytest.mark.parametrize(("check", "words"), [
    pytest.param("foreign_origin", ["echoes every origin", "polling and WebSocket"],
                 id="echoing-every-origin"),
    pytest.param("no_token", ["unauthenticated sockets accepted"],
                 id="accepting-sockets-without-token"),
])
def test_a_stock_server_fails(stock, check, words):
    """The stock Flask-SocketIO app echoes every origin and accepts sockets without a
    token: each is a failure of its own check."""
    code, report = run_doctor(stock.url)
    found = checks(report)[check]
    assert code == 1
    assert found["status"] == "fail"
    assert [w for w in words if w not in found["evidence"]] == [], found["evidence"]


def test_compression_forced_on_is_a_warning(tmp_path):
    env = server_env(tmp_path, **VAPID)
    migrate(env)
    code, report = doctor_while_up(app_server(tmp_path, env, "tests.support.compressed_app:app"),
                                   *all_options(env))
    found = statuses(report)
    assert code == 0, report
    assert report["verdict"] == "warn"
    assert found["compression"] == "warn"
    assert "permessage-deflate" in checks(report)["compression"]["evidence"]
    assert found.pop("safari") == "warn"  # it points at the compression
    assert set(found.values()) == {"pass", "warn"} and list(found.values()).count("warn") == 1


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if found:
        return found
    if in_ci():
        pytest.fail("nginx is not installed; under CI=true it must be (scripts/test.sh)")
    pytest.skip("nginx is not installed (scripts/test.sh installs nginx-light)")


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host $host;
            proxy_read_timeout 90s;
{upgrade}
        }}
    }}
}}
"""
UPGRADE_HEADERS = """            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";"""


def start_nginx(tmp: Path, upstream: int, upgrade: bool) -> ServerProcess:
    binary = nginx_binary()
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(
        prefix=tmp, port=port, upstream=upstream,
        # As root the workers would switch to nobody, who cannot enter pytest's tmp dirs.
        user="user root;" if os.geteuid() == 0 else "",
        upgrade=UPGRADE_HEADERS if upgrade else ""))
    argv = [binary, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf)]
    return ServerProcess(argv, dict(os.environ), port, tmp / "nginx.out").start()


def doctor_behind_nginx(healthy, tmp_path, upgrade: bool) -> tuple[int, dict]:
    server, env = healthy
    proxy = start_nginx(tmp_path, server.port, upgrade=upgrade)
    try:
        return run_doctor(proxy.url, "--origin", ALLOWED, "--token", make_token(env))
    finally:
        proxy.stop()


def test_nginx_dropping_the_upgrade_header_fails_naming_the_proxy_config(healthy, tmp_path):
    code, report = doctor_behind_nginx(healthy, tmp_path, upgrade=False)
    websocket = checks(report)["websocket"]
    assert code == 1
    assert websocket["status"] == "fail"
    assert "nginx" in websocket["evidence"] and "Upgrade header" in websocket["evidence"]
    assert "proxy_set_header Upgrade $http_upgrade" in websocket["fix"]
    assert 'Connection "upgrade"' in websocket["fix"]
    assert checks(report)["upgrade"]["status"] == "fail"


def test_nginx_passing_the_upgrade_header_passes(healthy, tmp_path):
    code, report = doctor_behind_nginx(healthy, tmp_path, upgrade=True)
    assert code == 0, report
    assert statuses(report)["websocket"] == "pass"
    assert statuses(report)["upgrade"] == "pass"


class RedirectFront(LoopbackServer):
    """An http front answering every request with ``status`` to ``target``."""

    def __init__(self, status: int, target: str) -> None:
        self.status, self.target = status, target
        super().__init__()
        self.url = self.origin

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            def _redirect(self) -> None:
                self.send_response(front.status)
                self.send_header("Location", front.target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = _redirect

            def log_message(self, *_args) -> None:
                pass

        return Handler


@pytest.mark.parametrize("status", [301, 302])
def test_redirect_that_turns_post_into_get_fails(healthy, status):
    server, _env = healthy
    with RedirectFront(status, server.url) as front:
        code, report = run_doctor(front.url)
    reach = checks(report)["reachability"]
    assert code == 1
    assert reach["status"] == "fail"
    assert f"answered {status}" in reach["evidence"] and "GET" in reach["evidence"]
    assert "307/308" in reach["fix"]


def test_redirect_that_keeps_the_method_passes(healthy):
    server, _env = healthy
    with RedirectFront(308, server.url) as front:
        code, report = run_doctor(front.url)
    assert statuses(report)["reachability"] == "pass", report
    assert code == 0


def test_flask_cli_runs_the_doctor(healthy):
    server, env = healthy
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "app", "doctor", server.url, "--json",
         "--timeout", TIMEOUT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "pass"


@pytest.mark.parametrize("argv", [
    ["ftp://example.com"],
    ["http://127.0.0.1:1", "--api-key", "k"],
    ["http://127.0.0.1:1", "--token", "not-a-jwt"],
    ["http://127.0.0.1:1", "--origin", "https://app.example.com/path"],
    ["http://127.0.0.1:1", "--timeout", "0"],
])
def test_unusable_arguments_exit_2(argv):
    err = io.StringIO()
    assert main(argv, out=io.StringIO(), err=err) == 2
    assert "doctor:" in err.getvalue()


def test_unreachable_server_exits_2():
    out, err = io.StringIO(), io.StringIO()
    assert main([f"http://127.0.0.1:{free_port()}", "--timeout", "1"], out=out, err=err) == 2
    assert "unreachable" in err.getvalue() and "connection refused" in err.getvalue()


def write_certificates(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signs for 127.0.0.1: (ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject, issuer, public_key, signer, ca: bool, san=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor test CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                 key.public_key(), ca_key, False, [x509.IPAddress(ipaddress.ip_address(
                     "127.0.0.1"))])
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """The production app behind gunicorn's own TLS, with a certificate from a test CA."""
    tmp = tmp_path_factory.mktemp("doctor-tls")
    ca, cert, key = write_certificates(tmp)
    env = server_env(tmp, **VAPID)
    migrate(env)
    server = gunicorn(tmp, env, extra=["--certfile", str(cert), "--keyfile", str(key)])
    server.start(wait=False)
    url = f"https://127.0.0.1:{server.port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/healthz", verify=str(ca), timeout=1).raise_for_status()
            break
        except requests.RequestException:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                server.stop()
                raise RuntimeError(f"TLS server not ready:\n{server.output()}") from None
            time.sleep(0.1)
    yield url, env, ca
    server.stop()


def test_https_with_a_trusted_certificate_passes_over_wss(tls, monkeypatch):
    url, env, ca = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # trust the test CA, as a browser would
    code, report = run_doctor(url, *all_options(env))
    assert code == 0, report
    assert set(statuses(report).values()) == {"pass"}, statuses(report)
    assert "certificate valid until" in checks(report)["reachability"]["evidence"]
    assert "wss://127.0.0.1" in checks(report)["websocket"]["evidence"]


def test_https_with_an_untrusted_certificate_fails(tls, monkeypatch):
    url, _env, _ca = tls
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    code, report = run_doctor(url)
    reach = checks(report)["reachability"]
    assert code == 1
    assert reach["status"] == "fail" and "certificate" in reach["evidence"]
    assert len(report["checks"]) == 1  # nothing else can work without a valid certificate


@pytest.mark.parametrize(("claims", "secret", "code"), [
    ({"exp_offset": -120}, None, "token_expired"),
    ({}, "another-secret-" + "x" * 40, "token_invalid"),
])
def test_refused_token_fails_with_its_code_and_shows_claims(healthy, claims, secret, code):
    server, env = healthy
    now = int(time.time())
    token = jwt.encode({"sub": "doctor-user", "iat": now - 300, "aud": "web",
                        "exp": now + claims.get("exp_offset", 3600)},
                       secret or env["JWT_SECRET_KEY"], algorithm="HS256")
    exit_status, report = run_doctor(server.url, "--token", token)
    auth = checks(report)["auth"]
    assert exit_status == 1
    assert auth["status"] == "fail" and f"({code})" in auth["evidence"]
    assert 'aud "web"' in auth["evidence"] and "not verified" in auth["evidence"]
    assert checks(report)["no_token"]["status"] == "pass"


def test_ping_interval_beyond_proxy_idle_timeouts_warns(tmp_path):
    env = server_env(tmp_path, PING_INTERVAL="58")
    migrate(env)
    code, report = doctor_while_up(gunicorn(tmp_path, env))
    handshake = checks(report)["handshake"]
    assert code == 0
    assert handshake["status"] == "warn"
    assert "pingInterval 58 s" in handshake["evidence"] and "idle" in handshake["evidence"]
    assert handshake["fix"].startswith("PING_INTERVAL=25")


# -- sessions split across processes -----------------------------------------------------

SPLIT = re.compile(r"✗ split sessions +[1-8] of 8 sessions answered 400 Invalid session by the "
                   r"URL that issued them: the requests of one session reach different "
                   r"processes or replicas")
SPLIT_FIXES = ("run one replica and one process",
               "SOCKETIO_TRANSPORTS=websocket with REDIS_URL",
               "a sticky proxy in front (deploy/haproxy-sticky.cfg)")
NOT_JUDGED = "not judged: polling sessions split across processes (see split sessions)"


def two_nodes(tmp: Path, extra: list[str] | None = None) -> tuple[list[ServerProcess], dict]:
    """Two gunicorn eventlet processes of the app sharing one database and nothing else
    (no REDIS_URL): each holds its own Engine.IO sessions. Both ready on return."""
    env = server_env(tmp)
    migrate(env)
    nodes = [gunicorn(tmp, env, extra=extra, name=f"node{i}") for i in (1, 2)]
    try:
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
    except BaseException:
        stop_all(nodes)
        raise
    return nodes, env


def stop_all(nodes: list[ServerProcess]) -> None:
    for node in nodes:
        node.stop()


def run_doctor_text(url: str, env: dict[str, str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([url, *all_options(env), "--timeout", TIMEOUT], out=out, err=err)
    print(out.getvalue())  # with -s: the sample in the README
    return code, out.getvalue()


def assert_names_the_split(code: int, text: str) -> None:
    assert code == 1, text
    assert SPLIT.search(text), text
    for fix in SPLIT_FIXES:
        assert fix in text
    for check in ("polling → websocket", "round trip"):
        assert re.search(rf"· {check} +{re.escape(NOT_JUDGED)}", text), text
    assert "Upgrade header" not in text  # not mistaken for a proxy that drops it


def test_round_robin_proxy_splitting_polling_sessions_is_named(tmp_path):
    """deploy/haproxy-websocket.cfg (round-robin, not sticky) in front of two nodes that
    leave polling on: the requests of one session alternate between the nodes."""
    nodes, env = two_nodes(tmp_path)
    proxy = None
    try:
        proxy = HAProxy(tmp_path, "haproxy-websocket.cfg", nodes).start()
        assert wait_until(lambda: [s["status"] for s in proxy.stats().values()] == ["UP"] * 2,
                          10), proxy.stats()
        code, text = run_doctor_text(proxy.url, env)
    finally:
        if proxy:
            proxy.stop()
        stop_all(nodes)
    assert_names_the_split(code, text)


def test_servers_sharing_one_port_split_sessions_and_are_named(tmp_path):
    """Two gunicorn servers bound to one port with --reuse-port (SO_REUSEPORT): the
    kernel spreads connections over both. Each also listens on a port of its own, only
    so that each one's readiness can be told apart."""
    shared = free_port()
    nodes, env = two_nodes(tmp_path, ["--reuse-port", "--bind", f"127.0.0.1:{shared}"])
    try:
        code, text = run_doctor_text(f"http://127.0.0.1:{shared}", env)
    finally:
        stop_all(nodes)
    assert_names_the_split(code, text)


def test_sticky_proxy_holds_sessions_only_for_clients_that_send_its_cookie(tmp_path):
    nodes, env = two_nodes(tmp_path)
    proxy = None
    try:
        proxy = HAProxy(tmp_path, "haproxy-sticky.cfg", nodes).start()
        code, report = run_doctor(proxy.url, "--origin", ALLOWED, "--token", make_token(env))
    finally:
        if proxy:
            proxy.stop()
        stop_all(nodes)
    split = checks(report)["split_sessions"]
    assert code == 0, report
    assert split["status"] == "warn" and "without the cookie SERVERID" in split["evidence"]
    assert "withCredentials: true" in split["fix"]
    # Like a browser with credentials, the doctor sends the cookie: the rest holds.
    assert statuses(report)["upgrade"] == "pass" and statuses(report)["auth"] == "pass"


# -- the fix the doctor names for split sessions, applied ------------------------------

# The shared Redis, in a database of this test's own: presence keys stay apart from
# other runs' (the pub/sub channel is shared, but carries only their users' rooms).
DOCTOR_REDIS = f"redis://{REDIS_HOST}:{REDIS_PORT}/7"
WEBSOCKET_ONLY = "skipped (server is WebSocket-only)"


def test_the_split_sessions_fix_it_recommends_passes_the_doctor(worker, tmp_path):
    """Issue 24, finding 1: SPLIT_FIX's second remedy applied to the round-robin set-up
    above (two nodes behind deploy/haproxy-websocket.cfg): SOCKETIO_TRANSPORTS=websocket
    and REDIS_URL on every node. The doctor learns from /healthz that they serve
    WebSocket alone, checks them over WebSocket, and nothing fails."""
    assert "SOCKETIO_TRANSPORTS=websocket with REDIS_URL" in SPLIT_FIX
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    cluster = Cluster(tmp_path, DOCTOR_REDIS, n=2, ASYNC_MODE=worker,
                      SOCKETIO_TRANSPORTS="websocket", **VAPID).start()
    proxy = None
    try:
        proxy = HAProxy(tmp_path, "haproxy-websocket.cfg", cluster.nodes).start()
        assert wait_until(lambda: [s["status"] for s in proxy.stats().values()] == ["UP"] * 2,
                          10), proxy.stats()
        started = [len(node.output()) for node in cluster.nodes]
        code, report = run_doctor(proxy.url, *all_options(cluster.env))
        time.sleep(0.5)  # the last requests' log lines
        logged = "".join(node.output()[at:] for node, at in zip(cluster.nodes, started,
                                                                 strict=True))
        spread = {name: int(row["stot"]) for name, row in proxy.stats().items()}
    finally:
        if proxy:
            proxy.stop()
        cluster.stop()
    found = checks(report)
    assert code == 0, report
    assert [c for c, status in statuses(report).items() if status == "fail"] == []
    assert "transports websocket" in found["server"]["evidence"]
    assert "message queue redis" in found["server"]["evidence"]
    for check in ("handshake", "split_sessions", "upgrade"):
        assert found[check]["status"] == "skip"
        assert found[check]["evidence"].startswith(WEBSOCKET_ONLY), found[check]
    for check in ("cors", "foreign_origin", "auth", "no_token", "websocket", "concurrency",
                  "round_trip"):
        assert found[check]["status"] == "pass", found[check]
    assert "accepted on WebSocket" in found["cors"]["evidence"]
    assert "while a WebSocket was open" in found["concurrency"]["evidence"]
    assert "second websocket" in found["round_trip"]["evidence"]
    assert all(n > 0 for n in spread.values()), spread  # the proxy used both nodes
    assert "Invalid transport" not in logged  # no polling request reached them
    assert error_lines(logged) == [], logged
