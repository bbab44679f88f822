"""Real servers for tests: gunicorn processes on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from bench.processes import signal_group, start_group, stop_group

ROOT = Path(__file__).resolve().parents[2]
# The secrets every real test server runs with (server_env), for minting and posting.
SERVER_JWT_SECRET = "test-secret-" + "k" * 40
SERVER_API_KEY = "test-api-key-" + "a" * 30
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One process we started; stopped by its own PID only."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log_path: Path,
                 cwd: Path = ROOT) -> None:
        self.argv, self.env, self.port, self.log_path, self.cwd = argv, env, port, log_path, cwd
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True, timeout: float = 30) -> ServerProcess:
        self._log = open(self.log_path, "ab")
        self.proc = start_group(self.argv, self._log, env=self.env, cwd=self.cwd)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        try:
            out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True)
        except FileNotFoundError:
            return []
        return [int(p) for p in out.stdout.split()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process group we created (gunicorn master and its workers)."""
        if self.proc:
            signal_group(self.proc, sig)

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        code = stop_group(self.proc, timeout)
        self._log.close()
        return code


def server_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Production-mode environment for a real server, with a SQLite file in tmp_path."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("JWT_", "NOTIFY_", "REDIS_", "DATABASE_", "FRONTEND_"))
    }
    env.update({
        "APP_ENV": "production",
        "JWT_SECRET_KEY": SERVER_JWT_SECRET,
        "NOTIFY_API_KEY": SERVER_API_KEY,
        "FRONTEND_URLS": "http://localhost:3000",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        # The suites scrape /metrics as a Prometheus on a private network would;
        # production's closed default has its own test (tests/test_metrics_closed.py).
        "METRICS_PUBLIC": "1",
        "PYTHONWARNINGS": "ignore",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


def gunicorn(tmp_path: Path, env: dict[str, str], worker: str = "eventlet",
             port: int | None = None, extra: list[str] | None = None,
             name: str = "gunicorn", app: str = "app:app") -> ServerProcess:
    """The Procfile's command, on a free loopback port (not yet started); ``app`` names
    another app module for a test (tests/support/clocked_app.py)."""
    port = port or free_port()
    argv = gunicorn_argv(worker, port, "--graceful-timeout", "5", *(extra or []), app=app)
    return ServerProcess(argv, env, port, tmp_path / f"{name}-{port}.log")


def gunicorn_argv(worker: str, port: int, *options: str, app: str = "app:app") -> list[str]:
    """The Procfile's gunicorn command line: ``worker`` class, one worker, bound to a
    loopback ``port``, with ``options`` before the app."""
    return [str(VENV_BIN / "gunicorn"), "--worker-class", worker, "-w", "1",
            "--bind", f"127.0.0.1:{port}", *options, app]


def run_command(argv: list[str], env: dict[str, str],
                timeout: float = 60) -> subprocess.CompletedProcess:
    """``argv`` run to its end from the project root, its output captured as text."""
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def refused_start(env: dict[str, str], worker: str, naming: str) -> str:
    """gunicorn (``worker`` class, one worker) that must refuse to start: it exits non-zero
    with no traceback and one line of its output holding ``naming``, which is answered."""
    result = run_command(gunicorn_argv(worker, free_port()), env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    lines = [line for line in output.splitlines() if naming in line]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def refusal(argv: list[str], env: dict[str, str]) -> list[str]:
    """The stderr lines of a command that loads the app and must refuse to: it exits 4,
    app.py's code for a configuration or library versions it will not start with."""
    result = run_command(argv, env)
    assert result.returncode == 4, result.stdout + result.stderr
    return result.stderr.strip().splitlines()


def migrate(env: dict[str, str]) -> None:
    """``flask --app app db upgrade``, as Railway's preDeployCommand runs it."""
    subprocess.run([str(VENV_BIN / "flask"), "--app", "app", "db", "upgrade"], env=env,
                   cwd=ROOT, check=True, capture_output=True)


def mint(user_id: str, ttl: int = 3600) -> str:
    """A user token a server started with server_env accepts."""
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + ttl}, SERVER_JWT_SECRET,
                      algorithm="HS256")


def post(server: ServerProcess, body: dict, key: str = SERVER_API_KEY,
         **headers: str) -> requests.Response:
    """POST /api/notifications as a producer."""
    return requests.post(server.url + "/api/notifications", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {key}", **headers})


def notify(server: ServerProcess, user_id: str, **fields) -> int:
    """Store and deliver one notification; returns its id."""
    response = post(server, {"user_id": user_id, "type": "test", "title": "hi", **fields})
    assert response.status_code == 201, response.text
    return response.json()["notifications"][0]["id"]
