"""GET /metrics on real gunicorn eventlet servers, moved by real python-socketio
clients and real HTTP producers: one process, several workers under one master
with PROMETHEUS_MULTIPROC_DIR, and a Redis that goes away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import requests
import socketio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import wait_for, wait_port
from tests.support.servers import (
    SERVER_API_KEY,
    SERVER_JWT_SECRET,
    free_port,
    gunicorn,
    migrate,
    server_env,
)
from tests.support.servers import (
    mint as token,
)
from tests.support.services import in_ci

SECRET = SERVER_JWT_SECRET
API_KEY = SERVER_API_KEY
ORIGIN = "http://localhost:3000"

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]  # real gunicorn


Samples = dict[tuple[str, tuple], float]


def scrape_raw(url: str) -> list:
    response = requests.get(url + "/metrics", timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return list(text_string_to_metric_families(response.text))


def scrape(url: str) -> Samples:
    """{(name, labels without process): value}, summed over processes."""
    samples: Samples = {}
    for family in scrape_raw(url):
        for s in family.samples:
            key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "process")))
            samples[key] = samples.get(key, 0.0) + s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def sockets(url: str) -> dict[str, float]:
    now = scrape(url)
    return {t: value(now, "notifier_sockets_connected", transport=t)
            for t in ("polling", "websocket")}


class Client:
    """A real python-socketio client that records what it receives."""

    def __init__(self, url: str, transports: list[str] | None = None) -> None:
        self.url, self.transports = url, transports
        # websocket-client would add an Origin of its own beside ours.
        self.sio = socketio.Client(reconnection=False,
                                   websocket_extra_options={"suppress_origin": True})
        self.notifications: list[dict] = []
        self.synced = threading.Event()
        self.sio.on("notification", self.notifications.append)
        self.sio.on("sync_complete", lambda _data: self.synced.set())

    def connect(self, auth: dict | None) -> Client:
        self.sio.connect(self.url, auth=auth, headers={"Origin": ORIGIN},
                         transports=self.transports, wait_timeout=10)
        return self

    @property
    def transport(self) -> str | None:
        return self.sio.transport() if self.sio.connected else None

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


def refuse(url: str, auth: dict) -> None:
    client = Client(url, ["polling"])
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(auth)
    client.close()


def post(url: str, user_id: str, title: str) -> int:
    response = requests.post(url + "/api/notifications", timeout=10,
                             headers={"Authorization": f"Bearer {API_KEY}"},
                             json={"user_id": user_id, "type": "test", "title": title})
    assert response.status_code == 201, response.text
    return response.json()["notifications"][0]["id"]


def socket_fds(pid: int) -> int:
    """How many sockets process ``pid`` has open (Linux /proc)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return count


@pytest.fixture
def clients():
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def start_server(tmp_path: Path, extra: list[str] | None = None, **env_overrides: str):
    env = server_env(tmp_path, **env_overrides)
    if "PROMETHEUS_MULTIPROC_DIR" not in env_overrides:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    migrate(env)
    return gunicorn(tmp_path, env, extra=extra, name="metrics").start()


def test_counters_and_gauges_follow_real_traffic(tmp_path, clients):
    server = start_server(tmp_path)
    try:
        url = server.url
        before = scrape(url)
        for transports in (["polling"], ["polling"], ["websocket"], ["websocket"], None):
            clients.append(Client(url, transports).connect({"token": token("u1")}))
        refuse(url, {})
        refuse(url, {"token": "garbage"})
        refuse(url, {"token": "a.b.c"})
        refuse(url, {"token": token("u2", ttl=-60)})
        # The default client starts on polling and upgrades to WebSocket.
        assert wait_for(lambda: clients[4].transport == "websocket", 10)
        assert wait_for(lambda: sockets(url) == {"polling": 2, "websocket": 3}, 10), \
            sockets(url)

        ids = [post(url, "u1", f"n{i}") for i in range(3)]
        assert wait_for(lambda: all(len(c.notifications) == 3 for c in clients), 10)
        replaying = Client(url, ["websocket"]).connect({"token": token("u1"), "last_id": 0})
        clients.append(replaying)
        assert replaying.synced.wait(10)
        assert [n["id"] for n in replaying.notifications] == ids

        after = scrape(url)
        assert delta(before, after, "notifier_socket_connects_total") == 6
        assert delta(before, after, "notifier_socket_refusals_total", code="token_missing") == 1
        assert delta(before, after, "notifier_socket_refusals_total", code="token_invalid") == 2
        assert delta(before, after, "notifier_socket_refusals_total", code="token_expired") == 1
        assert delta(before, after, "notifier_notifications_stored_total") == 3
        assert delta(before, after, "notifier_notifications_emitted_total") == 3
        assert delta(before, after, "notifier_notifications_replayed_total") == 3
        assert delta(before, after, "notifier_emit_latency_seconds_count") == 3
        assert 0 < delta(before, after, "notifier_emit_latency_seconds_sum") < 3 * 5
        assert value(after, "notifier_sockets_connected", transport="websocket") == 4

        # One worker, so every sample carries that worker's hostname:pid.
        (worker,) = server.worker_pids()
        labels = {s.labels.get("process") for f in scrape_raw(url) for s in f.samples}
        assert labels == {f"{socket.gethostname()}:{worker}"}

        for client in clients:
            client.close()
        assert wait_for(lambda: sockets(url) == {"polling": 0, "websocket": 0}, 10), \
            sockets(url)
    finally:
        server.stop()


def test_multiprocess_mode_adds_up_workers_and_forgets_dead_ones(tmp_path, clients):
    """Two workers under one master (WebSocket only, as polling would need stickiness
    between them): any worker's answer covers both, and a killed worker's sockets
    leave the gauge while its counters stay."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale")  # the master clears it
    server = start_server(tmp_path, extra=["-w", "2"], SOCKETIO_TRANSPORTS="websocket",
                          PROMETHEUS_MULTIPROC_DIR=str(directory))
    try:
        url = server.url
        assert not (directory / "counter_999999.db").exists()
        workers = server.worker_pids()
        assert len(workers) == 2
        for i in range(12):
            clients.append(Client(url, ["websocket"]).connect({"token": token(f"m{i}")}))
        for i in range(6):
            post(url, f"m{i}", "hello")
        # Every scrape, whichever worker answers it, sees all twelve sockets (each
        # worker refreshes its own share) and all six notifications.
        assert wait_for(lambda: sockets(url)["websocket"] == 12, 15), sockets(url)
        for _ in range(8):
            now = scrape(url)
            assert value(now, "notifier_notifications_stored_total") == 6
            assert value(now, "notifier_socket_connects_total") == 12
            assert value(now, "notifier_sockets_connected", transport="websocket") == 12
        # One answer for the whole master: labelled with the master's pid.
        labels = {s.labels.get("process") for f in scrape_raw(url) for s in f.samples}
        assert labels == {f"{socket.gethostname()}:{server.pid}"}

        # The worker holding more sockets: which one accepts is up to the kernel, and
        # all twelve may well be on one of them.
        victim = max(workers, key=socket_fds)
        os.kill(victim, signal.SIGKILL)  # a worker of the master we started
        assert wait_for(lambda: victim not in server.worker_pids()
                        and len(server.worker_pids()) == 2, 20)
        assert wait_for(lambda: sum(c.sio.connected for c in clients) < 12, 10), \
            "no client lost its socket with the killed worker"
        survivors = sum(c.sio.connected for c in clients)
        # Without child_exit's mark_process_dead the dead worker's share would stay.
        assert wait_for(lambda: sockets(url)["websocket"] == survivors, 15), \
            (sockets(url), survivors)
        now = scrape(url)
        assert value(now, "notifier_notifications_stored_total") == 6
        assert value(now, "notifier_socket_connects_total") == 12
    finally:
        server.stop()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of our own on a free port, so stopping it touches no one else."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        if in_ci():
            pytest.fail("redis-server is not installed; under CI=true it must be")
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_port(port, 10), "private redis-server did not start"
        yield proc, f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(5)


def test_message_queue_errors_count_publishes_lost_to_a_dead_redis(tmp_path, clients,
                                                                   private_redis):
    redis_proc, redis_url = private_redis
    server = start_server(tmp_path, REDIS_URL=redis_url)
    try:
        url = server.url
        listener = Client(url, ["websocket"]).connect({"token": token("r1")})
        clients.append(listener)
        post(url, "r1", "through redis")
        assert wait_for(lambda: len(listener.notifications) == 1, 10)
        before = scrape(url)
        assert value(before, "notifier_message_queue_errors_total", operation="publish") == 0

        redis_proc.send_signal(signal.SIGKILL)
        redis_proc.wait(5)
        post(url, "r1", "stored, not published")  # stored: the client replays it later
        after = scrape(url)
        assert delta(before, after, "notifier_message_queue_errors_total",
                     operation="publish") == 1
        assert delta(before, after, "notifier_notifications_stored_total") == 1
        # The subscriber notices too, and keeps counting while it retries.
        assert wait_for(lambda: value(scrape(url), "notifier_message_queue_errors_total",
                                      operation="subscribe") >= 1, 10)
    finally:
        server.stop()
