"""Several real nodes for the scale-out tests: gunicorn eventlet processes sharing
Redis and one database, a private redis-server, HAProxy in front, and recording
python-socketio clients. Every process is started here and stopped by its own PID."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.processes import signal_group, start_group, stop_group
from tests.support.servers import (
    ROOT,
    SERVER_API_KEY,
    SERVER_JWT_SECRET,
    ServerProcess,
    free_port,
    gunicorn,
    migrate,
    mint,
    server_env,
)
from tests.support.services import REDIS_HOST, REDIS_PORT, SHARED_REDIS, require_service

SECRET = SERVER_JWT_SECRET
API_KEY = SERVER_API_KEY
ORIGIN = "http://localhost:3000"
DEPLOY = ROOT / "deploy"


token = mint  # a user token every node accepts


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def wait_port(port: int, timeout: float = 10) -> bool:
    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return True
        except OSError:
            return False

    return bool(wait_for(answers, timeout))


class Proc:
    """A foreground helper process (redis-server, haproxy) stopped by its PID."""

    def __init__(self, argv: list[str], log_path: Path, port: int) -> None:
        self.argv, self.log_path, self.port = argv, log_path, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")
        self.proc = start_group(self.argv, self._log)
        if not wait_port(self.port):
            self.stop()
            raise RuntimeError(
                f"{self.argv[0]} did not listen on {self.port}:\n"
                + self.log_path.read_text(errors="replace")
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if sig == signal.SIGTERM:
            stop_group(self.proc, 10)
        else:
            signal_group(self.proc, sig)
            self.proc.wait(10)
        self._log.close()
        self.proc = None


def private_redis(tmp_path: Path, port: int | None = None) -> Proc:
    """A redis-server of our own, for tests that stop it (never the shared one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed") if _ci() else pytest.skip(
            "redis-server is not installed"
        )
    port = port or free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(tmp_path),
    ]
    return Proc(argv, tmp_path / f"redis-{port}.log", port)


def tls_redis(tmp_path: Path) -> tuple[Proc, str]:
    """A private redis-server speaking only TLS, with a throwaway self-signed
    certificate; returns it (not started) and the rediss:// URL that trusts it."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed") if _ci() else pytest.skip(
            "openssl is not installed"
        )
    cert, key = tmp_path / "redis-cert.pem", tmp_path / "redis-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = private_redis(tmp_path)
    port = server.port
    server.argv[server.argv.index("--port") + 1] = "0"
    server.argv += [
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
    ]
    return server, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"


def _ci() -> bool:
    from tests.support.services import in_ci

    return in_ci()


def render(template: str, port: int, nodes: list[ServerProcess], stats: Path) -> str:
    """A deploy/ HAProxy config with this test's ports: the bind line, the server
    lines between BEGIN/END SERVERS (same options, faster checks) and a stats socket."""
    block = re.search(r"# BEGIN SERVERS\n(.*?)\n\s*# END SERVERS", template, re.S)
    sticky = "cookie node1" in block.group(1)
    servers = "\n".join(
        f"    server node{i} 127.0.0.1:{n.port} check inter 300ms fall 2 rise 1"
        + (f" cookie node{i}" if sticky else "")
        for i, n in enumerate(nodes, 1)
    )
    text = template.replace(block.group(0), f"# BEGIN SERVERS\n{servers}\n    # END SERVERS")
    text = re.sub(r"(?m)^    bind :\d+$", f"    bind 127.0.0.1:{port}", text)
    text = re.sub(r"(?m)^    # stats socket .*$", f"    stats socket {stats} level admin", text)
    assert f"127.0.0.1:{port}" in text and str(stats) in text
    return text


class HAProxy(Proc):
    def __init__(self, tmp_path: Path, config_name: str, nodes: list[ServerProcess]) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            pytest.fail("haproxy is not installed") if _ci() else pytest.skip(
                "haproxy is not installed"
            )
        port = free_port()
        self.stats_path = tmp_path / f"haproxy-{port}.sock"
        config = tmp_path / f"haproxy-{port}.cfg"
        config.write_text(render((DEPLOY / config_name).read_text(), port, nodes, self.stats_path))
        super().__init__([binary, "-db", "-f", str(config)], tmp_path / f"haproxy-{port}.log", port)
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` per server of the backend: scur, stot, status..."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.stats_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            r["svname"]: r
            for r in rows
            if r["pxname"] == "nodes" and r["svname"] not in ("BACKEND", "FRONTEND")
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """``n`` gunicorn nodes sharing one database and one Redis; ``ASYNC_MODE=gevent``
    among the settings runs them on gunicorn's gevent worker (default eventlet)."""

    def __init__(
        self,
        tmp_path: Path,
        redis_url: str,
        database_url: str | None = None,
        n: int = 2,
        **env: str,
    ) -> None:
        overrides = {
            "REDIS_URL": redis_url,
            "PING_INTERVAL": "5",
            "PING_TIMEOUT": "5",
            # Per-node limiter counters: every test here connects from
            # 127.0.0.1, and a budget kept in the shared Redis would be
            # spent by other test runs too.
            "RATE_LIMIT_STORAGE_URL": "memory://",
            "CONNECT_RATE_PER_IP": "0",
            "MAX_PENDING_SESSIONS_PER_IP": "0",
            **env,
        }
        if database_url:
            overrides["DATABASE_URL"] = database_url
        self.env = server_env(tmp_path, **overrides)
        self.tmp_path = tmp_path
        migrate(self.env)
        worker = self.env.get("ASYNC_MODE", "eventlet")  # the same worker class
        self.nodes = [gunicorn(tmp_path, self.env, worker=worker, name=f"node{i}")
                      for i in range(1, n + 1)]

    def start(self) -> Cluster:
        try:
            for node in self.nodes:
                node.start(wait=False)
            for node in self.nodes:
                node.wait_ready()
        except BaseException:
            self.stop()  # no node outlives a failed start
            raise
        return self

    def stop(self) -> None:
        # Signal every node first, so their graceful shutdowns overlap.
        for node in self.nodes:
            node.kill(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(node.output() for node in self.nodes)


@contextmanager
def proxied_cluster(tmp_path: Path, config_name: str, n: int = 2,
                    **env: str) -> Iterator[tuple[Cluster, HAProxy]]:
    """A started Cluster of ``n`` nodes on the shared Redis, behind HAProxy run with
    deploy/``config_name``: (cluster, proxy), both stopped when the block ends."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    cluster = Cluster(tmp_path, SHARED_REDIS, n=n, **env).start()
    proxy = None
    try:
        proxy = HAProxy(tmp_path, config_name, cluster.nodes).start()
        yield cluster, proxy
    finally:
        if proxy:
            proxy.stop()
        cluster.stop()


def post_notification(
    base_url: str, user_ids: list[str], title: str, timeout: float = 5, **fields: Any
) -> requests.Response:
    body = {"user_ids": user_ids, "type": "test", "title": title, **fields}
    return requests.post(
        f"{base_url}/api/notifications",
        json=body,
        timeout=timeout,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )


def _allow_long_replays() -> None:
    # python-engineio's client decodes at most 16 packets per polling response; a
    # replay after a fault is one response of up to 102 (see the README).
    from engineio.payload import Payload

    Payload.max_decode_packets = 500


class Recorder:
    """A python-socketio client that records every notification; it reconnects by
    itself and then asks for what it missed with ``last_id``."""

    def __init__(
        self, user_id: str, transports: list[str] | None = None, reconnection: bool = True
    ) -> None:
        import socketio

        _allow_long_replays()
        self.user_id = user_id
        self.transports = transports
        self.ids: list[int] = []
        self.unstored: list[dict[str, Any]] = []
        self.errors: list[Any] = []
        self.connects = 0
        self.disconnects: list[Any] = []
        self.disconnected_at: list[float] = []
        self.synced = threading.Event()
        self.last_id: int | None = None
        self._lock = threading.Lock()
        self.sio = socketio.Client(
            reconnection=reconnection,
            reconnection_delay=0.2,
            reconnection_delay_max=1,
            randomization_factor=0.2,
            # websocket-client adds an Origin of its own beside ours
            websocket_extra_options={"suppress_origin": True},
        )
        self.sio.on("auth_success", self._on_welcome)
        self.sio.on("notification", self._on_notification)
        self.sio.on("sync_complete", self._on_sync)
        self.sio.on("connect_error", self.errors.append)
        self.sio.on("disconnect", self._on_disconnect)

    def _auth(self) -> dict[str, Any]:
        auth: dict[str, Any] = {"token": token(self.user_id)}
        if self.last_id is not None:
            auth["last_id"] = self.last_id
        return auth

    def _on_welcome(self, _data: Any) -> None:
        self.connects += 1

    def _on_notification(self, data: dict[str, Any]) -> None:
        if not isinstance(data.get("id"), int):
            self.unstored.append(data)  # e.g. from a write-only emitter: no cursor
            return
        with self._lock:
            self.ids.append(data["id"])
            if self.last_id is None or data["id"] > self.last_id:
                self.last_id = data["id"]

    def _on_sync(self, data: dict[str, Any]) -> None:
        self.synced.set()

    def _on_disconnect(self, *reason: Any) -> None:
        self.synced.clear()
        self.disconnects.append(reason)
        self.disconnected_at.append(time.monotonic())

    def connect(self, url: str, timeout: float = 10) -> Recorder:
        kwargs: dict[str, Any] = {
            "headers": {"Origin": ORIGIN},
            "auth": self._auth,
            "wait_timeout": timeout,
        }
        if self.transports:
            kwargs["transports"] = self.transports
        # Start the cursor at 0 so even the first connection replays (idempotent).
        if self.last_id is None:
            self.last_id = 0
        self.sio.connect(url, **kwargs)
        assert self.synced.wait(timeout), f"{self.user_id}: no sync_complete"
        return self

    @property
    def transport(self) -> str:
        return self.sio.transport()

    def duplicates(self) -> list[int]:
        return [i for i, c in Counter(self.ids).items() if c > 1]

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:
            pass


def invalid_session_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Invalid session" in line]


def connect_all(made: list[Recorder], url: str, users: list[str],
                transports: list[str] | None) -> list[Recorder]:
    """One connected Recorder per user, all with the same transports."""
    batch = [Recorder(u, transports=transports) for u in users]
    made.extend(batch)
    for recorder in batch:
        recorder.connect(url)
    return batch
