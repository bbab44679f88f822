"""REDIS_URL: Socket.IO's message queue across real gunicorn eventlet processes,
producers outside the web process, readiness, and no Redis without REDIS_URL."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import requests

from tests.support.cluster import (
    Cluster,
    Recorder,
    post_notification,
    tls_redis,
    wait_for,
)
from tests.support.servers import ROOT, VENV_BIN, free_port, gunicorn, migrate, server_env
from tests.support.services import REDIS_HOST, REDIS_PORT, SHARED_REDIS, require_service

pytestmark = [pytest.mark.server, pytest.mark.redis]



def user() -> str:
    # The shared Redis's pub/sub is shared by every test run: unique users only.
    return f"mq-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def shared_redis():
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return SHARED_REDIS


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Shared by this module's tests: each one uses users of its own."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    cluster = Cluster(tmp_path_factory.mktemp("two-nodes"), SHARED_REDIS, n=2).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def recorders():
    made: list[Recorder] = []

    def _make(*args, **kwargs) -> Recorder:
        made.append(Recorder(*args, **kwargs))
        return made[-1]

    yield _make
    for recorder in made:
        recorder.close()


def test_an_emit_on_any_node_reaches_sockets_on_every_node(two_nodes, recorders):
    a, b = two_nodes.nodes
    name = user()
    on_a = recorders(name, transports=["polling"]).connect(a.url)
    on_b = recorders(name, transports=["websocket"]).connect(b.url)
    sent = []
    for node in (a, b, a, b):
        response = post_notification(node.url, [name], f"from {node.port}")
        assert response.status_code == 201, response.text
        sent.append(response.json()["notifications"][0]["id"])
    for recorder in (on_a, on_b):
        assert wait_for(lambda r=recorder: sorted(r.ids) == sent, 10), (recorder.ids, sent)
        assert recorder.duplicates() == []
    assert on_a.transport == "polling" and on_b.transport == "websocket"


def test_readyz_reports_the_message_queue_ok(two_nodes):
    for node in two_nodes.nodes:
        body = requests.get(node.url + "/readyz", timeout=5).json()
        assert body["message_queue"] == "ok"


def readyz(tmp_path, **env: str) -> requests.Response:
    """GET /readyz from a real server started with ``env``."""
    server_settings = server_env(tmp_path, **env)
    migrate(server_settings)
    server = gunicorn(tmp_path, server_settings)
    try:
        server.start()
        return requests.get(server.url + "/readyz", timeout=10)
    finally:
        server.stop()


def test_readyz_reports_a_closed_redis_port_as_error(tmp_path):
    response = readyz(tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert response.status_code == 503
    assert response.json()["message_queue"] == "error"
    assert response.json()["database"] == "ok"


def test_readyz_says_disabled_without_redis(tmp_path):
    response = readyz(tmp_path)
    assert response.status_code == 200
    assert response.json()["message_queue"] == "disabled"


NO_REDIS_CHECK = """
import json, sys
from app import create_app
app = create_app({"DATABASE_URL": "sqlite://", "REDIS_URL": ""})
client = app.test_client()
client.get("/healthz"); client.get("/readyz")
print(json.dumps(sorted(m for m in sys.modules
                        if m.split(".")[0] in ("redis", "valkey", "aioredis"))))
"""


def run_python(code: str, env: dict[str, str] | None = None,
               check: bool = False) -> subprocess.CompletedProcess:
    """``python -c code`` in its own process, in the repository."""
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=check)


def test_without_redis_url_nothing_imports_redis(tmp_path):
    env = server_env(tmp_path, APP_ENV="development")
    env.pop("REDIS_URL", None)
    out = run_python(NO_REDIS_CHECK, env, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_python_socketio_alone_would_import_redis(tmp_path):
    """The finding behind utils/patches/ (without_modules): the check above can fail."""
    code = "import sys, socketio; print('redis' in sys.modules)"
    out = run_python(code, check=True)
    assert out.stdout.strip() == "True"


def with_redis_manager(tmp_path, url: str, then: str) -> subprocess.CompletedProcess:
    """Another process: ``app = create_app(...)`` with REDIS_URL=url, its manager ``m``
    connected, then ``then`` (which prints a ``RESULT ...`` line)."""
    code = (
        "from app import create_app\n"
        "from utils.extensions import socketio\n"
        f"app = create_app({{'DATABASE_URL': 'sqlite://', 'REDIS_URL': '{url}'}})\n"
        "m = socketio.server.manager\n"
        "m._redis_connect()\n"
    ) + then
    return run_python(code, server_env(tmp_path, APP_ENV="development"))


def test_with_redis_url_the_manager_uses_redis(tmp_path, shared_redis):
    out = with_redis_manager(tmp_path, shared_redis,
                             "print('RESULT', type(m).__name__, m.channel, m.redis.ping())\n")
    assert result(out) == ["GuardedRedisManager", "notifications", "True"], out.stderr


def test_a_rediss_url_is_accepted_and_speaks_tls(tmp_path, shared_redis):
    """rediss:// selects redis-py's TLS connection. Against the plain shared Redis
    the TLS handshake fails, so readiness says error instead of hanging."""
    url = f"rediss://{REDIS_HOST}:{REDIS_PORT}/0"
    out = with_redis_manager(
        tmp_path, url,
        "ready = app.test_client().get('/readyz').get_json()['message_queue']\n"
        "print('RESULT', m.redis.connection_pool.connection_class.__name__, ready)\n")
    assert result(out) == ["SSLConnection", "error"], out.stderr


def test_two_nodes_on_a_tls_redis_over_rediss(tmp_path, recorders):
    """A real TLS Redis (private redis-server, self-signed certificate): the
    rediss:// URL carries the queue between nodes and readiness says ok."""
    redis, url = tls_redis(tmp_path)
    redis.start()
    cluster = None
    try:
        cluster = Cluster(tmp_path, url, n=2).start()
        a, b = cluster.nodes
        name = user()
        on_a = recorders(name).connect(a.url)
        on_b = recorders(name, transports=["websocket"]).connect(b.url)
        response = post_notification(a.url, [name], "over TLS")
        assert response.status_code == 201
        sent = [response.json()["notifications"][0]["id"]]
        for recorder in (on_a, on_b):
            assert wait_for(lambda r=recorder: r.ids == sent, 10), recorder.ids
        for node in (a, b):
            assert requests.get(node.url + "/readyz", timeout=5).json()["message_queue"] == "ok"
    finally:
        if cluster:
            cluster.stop()
        redis.stop()


def test_an_ipv6_redis_url_works_under_eventlet(tmp_path, recorders):
    """Railway's private network is IPv6: the queue must reach Redis over it."""
    import socket

    require_service("Redis", REDIS_HOST, REDIS_PORT)
    try:
        socket.create_connection(("::1", REDIS_PORT), timeout=0.5).close()
    except OSError:
        pytest.skip("the shared Redis does not listen on [::1]")
    cluster = Cluster(tmp_path, f"redis://[::1]:{REDIS_PORT}/0", n=2).start()
    try:
        a, b = cluster.nodes
        name = user()
        on_b = recorders(name, transports=["websocket"]).connect(b.url)
        assert requests.get(a.url + "/readyz", timeout=5).json()["message_queue"] == "ok"
        response = post_notification(a.url, [name], "over IPv6")
        assert response.status_code == 201
        sent = [response.json()["notifications"][0]["id"]]
        assert wait_for(lambda: on_b.ids == sent, 10), on_b.ids
    finally:
        cluster.stop()


def result(out: subprocess.CompletedProcess) -> list[str]:
    """The words of the child's ``RESULT ...`` line (its log lines share stdout)."""
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    return lines[-1].split()[1:] if lines else [out.stdout, out.stderr]


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://default:pw@redis.example.com:6380/0",
        "REDISS://host:6380",
        "unix:///run/redis.sock",
    ],
)
def test_config_accepts_redis_and_rediss_urls(tmp_path, url):
    from utils.config.settings import load_settings

    assert load_settings({"REDIS_URL": url}, tmp_path).redis_url == url


@pytest.mark.parametrize("url", ["http://redis:6379", "s3cr3t-password", "redis:6379"])
def test_config_refuses_other_redis_urls_without_echoing_them(tmp_path, url):
    from utils.config.settings import ConfigError, load_settings

    with pytest.raises(ConfigError) as excinfo:
        load_settings({"REDIS_URL": url}, tmp_path)
    assert "REDIS_URL must start with redis://" in str(excinfo.value)
    assert url not in str(excinfo.value)


def test_flask_notify_in_another_process_reaches_running_servers(two_nodes, recorders):
    a, b = two_nodes.nodes
    name = user()
    on_a = recorders(name).connect(a.url)
    on_b = recorders(name, transports=["websocket"]).connect(b.url)
    out = subprocess.run(
        [
            str(VENV_BIN / "flask"),
            "--app",
            "app",
            "notify",
            name,
            "--type",
            "cli",
            "--title",
            "from the command line",
        ],
        env=two_nodes.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    stored = json.loads(out.stdout.strip().splitlines()[-1])["notifications"][0]["id"]
    for recorder in (on_a, on_b):
        assert wait_for(lambda r=recorder: r.ids == [stored], 10), recorder.ids
    # Stored before it was emitted: a socket connecting afterwards replays it.
    late = recorders(name)
    late.last_id = 0
    late.connect(b.url)
    assert late.ids == [stored]


def test_a_write_only_emitter_in_another_service_reaches_every_node(two_nodes, recorders):
    a, b = two_nodes.nodes
    name = user()
    on_a = recorders(name).connect(a.url)
    on_b = recorders(name, transports=["websocket"]).connect(b.url)
    env = {**two_nodes.env, "PYTHONPATH": ""}
    out = subprocess.run(
        [sys.executable, "examples/emit_from_service.py", name, "from a service"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for recorder in (on_a, on_b):
        assert wait_for(lambda r=recorder: r.unstored, 10)
        assert [(n["title"], n["id"]) for n in recorder.unstored] == [("from a service", None)]
    # Not stored: nothing to replay.
    listing = requests.get(
        a.url + "/api/notifications", timeout=5, headers={"Authorization": f"Bearer {_token(name)}"}
    ).json()
    assert listing["notifications"] == []


def _token(name: str) -> str:
    from tests.support.cluster import token

    return token(name)


def test_the_emitter_example_does_not_import_the_web_app():
    source = (ROOT / "examples" / "emit_from_service.py").read_text()
    for module in ("app", "utils", "routes", "flask"):
        assert f"import {module}" not in source and f"from {module}" not in source
