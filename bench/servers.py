"""The three servers under test, started on loopback and measured through /proc."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import start_group, stop_group

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-secret-" + "s" * 40
API_KEY = "bench-api-key-" + "k" * 30
ORIGIN = "http://localhost:3000"
# High enough never to trigger, so the limiter's per-request cost stays in the figures.
UNREACHED_RATE_LIMIT = "10000000/minute"
RAISED_PER_IP = 1_000_000  # the settings' maximum
SERVER_CORE, LOADGEN_CORE = "0", "1"

SERVERS = ("product", "baseline", "node")


def raise_nofile() -> None:
    """10k sockets need 10k descriptors in the server and in the load generator."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pinned(argv: list[str], core: str) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", core, *argv]
    return argv


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    workdir: Path
    async_mode: str = "eventlet"
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gc_log(self) -> Path:
        return self.workdir / f"gc-{self.name}-{self.port}.jsonl"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("JWT_", "NOTIFY_", "REDIS_", "DATABASE_", "FRONTEND_",
                                    "RATE_LIMIT", "GC_PAUSE", "CONNECT_RATE", "VAPID_",
                                    "PUSH_", "WEB_PUSH_"))}
        env.update({
            "APP_ENV": "production",
            "JWT_SECRET_KEY": SECRET,
            "NOTIFY_API_KEY": API_KEY,
            "FRONTEND_URLS": ORIGIN,
            "DATABASE_URL": f"sqlite:///{self.workdir / f'{self.name}-{self.port}.db'}",
            "INSTANCE_PATH": str(self.workdir / "instance"),
            "ASYNC_MODE": self.async_mode,
            "RATE_LIMIT_HTTP": UNREACHED_RATE_LIMIT,
            "RATE_LIMIT_API_KEY": UNREACHED_RATE_LIMIT,
            # Every limit stays on, as production runs it, raised so that the one
            # address every bench client shares (127.0.0.1) is never refused: the
            # checks' cost and memory stay in the figures.
            "CONNECT_RATE_PER_IP": str(RAISED_PER_IP),
            "MAX_PENDING_SESSIONS_PER_IP": str(RAISED_PER_IP),
            "GC_PAUSE_LOG": str(self.gc_log),
            "METRICS_PUBLIC": "1",  # the bench reads the product's counters
            # No delivery check falls due during a run: the bench's clients send no
            # receipts, except in the receipts scenario, which sets its own.
            "PUSH_AFTER": "3600",
            "PYTHONWARNINGS": "ignore",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def argv(self) -> list[str]:
        bind = f"127.0.0.1:{self.port}"
        if self.name == "product":
            # The Procfile's command; gunicorn.conf.py is read from the working directory.
            return [str(VENV_BIN / "gunicorn"), "--worker-class", self.async_mode, "-w", "1",
                    "--bind", bind, "app:app"]
        if self.name == "baseline":
            return [str(VENV_BIN / "gunicorn"), "--worker-class", "eventlet", "-w", "1",
                    "--bind", bind, "-c", str(BENCH / "gunicorn_baseline.conf.py"),
                    "bench.baseline_app:app"]
        return ["node", str(BENCH / "node_server.js"), str(self.port)]

    def start(self, timeout: float = 30) -> None:
        env = self.env()
        if self.name == "product":
            subprocess.run([str(VENV_BIN / "flask"), "--app", "app", "db", "upgrade"], env=env,
                           cwd=ROOT, check=True, capture_output=True)
        self._log = open(self.workdir / f"{self.name}-{self.port}.log", "ab")
        self.proc = start_group(pinned(self.argv(), SERVER_CORE), self._log, env=env, cwd=ROOT)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200 and self.measured_pid():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def measured_pid(self) -> int | None:
        """The process that serves sockets: gunicorn's worker, or node itself."""
        if self.name == "node":
            return self.proc.pid
        # taskset execs gunicorn in place, so the master is proc.pid.
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            return None
        return pids[0] if pids else None

    def counters(self, *names: str) -> dict[str, float] | None:
        """The product's counters ``names`` (summed over labels) from /metrics; None for
        the other servers."""
        if self.name != "product":
            return None
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        values = dict.fromkeys(names, 0.0)
        for line in text.splitlines():  # name{labels} value
            name, value = line.partition("{")[0].partition(" ")[0], line.rpartition(" ")[2]
            if name in values:
                values[name] += float(value)
        return values

    def write_counters(self) -> tuple[float, float] | None:
        """The product's notifications stored and the transactions that stored them."""
        found = self.counters("notifier_notifications_stored_total",
                              "notifier_notification_write_groups_total")
        return None if found is None else tuple(found.values())  # type: ignore[return-value]

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_group(self.proc)
        self._log.close()


def cpu_seconds(pid: int) -> float:
    """Run time of every thread of ``pid`` (ns-precise scheduler accounting)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def cpu_ticks_seconds(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat (10 ms granularity)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
