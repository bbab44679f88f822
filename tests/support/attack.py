"""The attack suite's library (tests/attacks/): servers with the suite's settings, the
bystander every attack runs beside, raw Engine.IO and WebSocket clients, and the
worker's memory. The fixtures that use them are in tests/attacks/conftest.py."""

from __future__ import annotations

import json
import select
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import socketio
import websocket
from websocket import ABNF

from tests.support.clients import ORIGIN
from tests.support.servers import SERVER_API_KEY, ServerProcess, gunicorn, migrate, mint, server_env

WORKERS = ["eventlet", "gevent"]


ATTACKER_IP = "198.51.100.7"


VICTIM_IP = "198.51.100.9"  # users an attack aims at, kept apart from the attacker too


LIMIT_S = 1.0  # worst bystander latency, /healthz and POST-to-arrival alike


RSS_LIMIT_MB = 20


MAX_MESSAGE = 32768  # MAX_HTTP_BUFFER_SIZE's default on the fixed server


SUITE_SETTINGS = {
    "TRUSTED_PROXIES": "127.0.0.1",
    "CONNECT_TIMEOUT": "2",
    "MAX_PENDING_SESSIONS_PER_IP": "10",
    "PING_INTERVAL": "5",
    "PING_TIMEOUT": "5",
}


MINTED: list[str] = []  # every JWT the suite made; none may reach a log


def token(user_id: str, ttl: int = 3600) -> str:
    """A user token the suite's servers accept (remembered for the log checks)."""
    value = mint(user_id, ttl)
    MINTED.append(value)
    return value


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


_TEMPLATE: dict[str, Path] = {}


def _migrated_database(tmp_path_factory) -> Path:
    """``flask db upgrade`` once per run, into a template every server copies."""
    if "db" not in _TEMPLATE:
        tmp = tmp_path_factory.mktemp("template")
        migrate(server_env(tmp))
        _TEMPLATE["db"] = tmp / "server.db"
    return _TEMPLATE["db"]


def start_server(tmp_path_factory, worker: str, name: str, extra: list[str] | None = None,
                 **overrides: str) -> ServerProcess:
    """gunicorn (``worker``) with the suite's settings, on a migrated SQLite file."""
    template = _migrated_database(tmp_path_factory)
    tmp = tmp_path_factory.mktemp(f"{name}-{worker}")
    for suffix in ("", "-wal", "-shm"):
        source = template.with_name(template.name + suffix)
        if source.exists():
            shutil.copyfile(source, tmp / source.name)
    env = server_env(tmp, ASYNC_MODE=worker, **{**SUITE_SETTINGS, **overrides})
    proc = gunicorn(tmp, env, worker=worker, extra=extra, name=name).start()
    proc.worker = worker
    proc.db_path = tmp / "server.db"
    return proc


def _settings_of(module) -> dict[str, str]:
    return getattr(module, "SERVER_SETTINGS", {})


def worker_pid(server: ServerProcess) -> int:
    pids = server.worker_pids()
    assert len(pids) == 1, f"expected one gunicorn worker, found {pids}"
    return pids[0]


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def log_mark(server: ServerProcess) -> int:
    return len(server.output())


def log_since(server: ServerProcess, mark: int) -> str:
    time.sleep(0.3)  # let the worker's last lines reach the file
    return server.output()[mark:]


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[text.find("Traceback"):][:1500]


def error_code(response: requests.Response) -> str | None:
    """The contract's ``{"error": {"code": ...}}``, or None for any other body."""
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


class Bystander:
    """Another user, measuring the service while an attack runs (see the module doc)."""

    HEALTH_EVERY = 0.1
    POST_EVERY = 0.25
    WARMUP = 0.3
    TAIL = 0.5  # keeps measuring this long after the attack
    GRACE = 2.0  # for notifications still on their way at the end
    TIMEOUT = 5.0

    def __init__(self, server: ServerProcess, figures: dict[str, Any]) -> None:
        self.server, self.figures = server, figures
        self.user = unique("bystander")
        self.token = token(self.user)
        self.pid = worker_pid(server)
        self.rss_base = self.rss_peak = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.health_worst = 0.0
        self.health_checks = 0
        self.health_errors: list[str] = []
        self.sent: dict[int, float] = {}
        self.arrived: dict[int, float] = {}
        self.post_errors: list[str] = []
        self.still_connected = False
        self.client = socketio.Client(reconnection=False,
                                      websocket_extra_options={"suppress_origin": True})
        self.client.on("notification", self._arrival)

    # -- the threads

    def _arrival(self, data: Any = None) -> None:
        now = time.monotonic()
        seq = data.get("data", {}).get("seq") if isinstance(data, dict) else None
        if isinstance(seq, int):
            with self.lock:
                self.arrived.setdefault(seq, now)

    def _health(self) -> None:
        url = self.server.url + "/healthz"
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status = requests.get(url, timeout=self.TIMEOUT).status_code
                if status != 200:
                    self.health_errors.append(f"status {status}")
            except requests.RequestException as exc:
                self.health_errors.append(type(exc).__name__)
            took = time.monotonic() - started
            self.health_worst = max(self.health_worst, took)
            self.health_checks += 1
            self.stop.wait(max(0.0, self.HEALTH_EVERY - took))

    def _poster(self) -> None:
        url = self.server.url + "/api/notifications"
        headers = {"Authorization": f"Bearer {SERVER_API_KEY}"}
        seq = 0
        while not self.stop.is_set():
            seq += 1
            started = time.monotonic()
            with self.lock:
                self.sent[seq] = started
            body = {"user_id": self.user, "type": "bystander", "title": f"b{seq}",
                    "data": {"seq": seq}}
            try:
                response = requests.post(url, json=body, headers=headers, timeout=self.TIMEOUT)
                if response.status_code != 201:
                    self.post_errors.append(f"#{seq}: {response.status_code}")
            except requests.RequestException as exc:
                self.post_errors.append(f"#{seq}: {type(exc).__name__}")
            self.stop.wait(max(0.0, self.POST_EVERY - (time.monotonic() - started)))

    def _rss(self) -> None:
        while not self.stop.is_set():
            self.rss_peak = max(self.rss_peak, rss_kb(self.pid))
            self.stop.wait(0.05)

    # -- the context manager

    def __enter__(self) -> Bystander:
        self.client.connect(self.server.url, headers={"Origin": ORIGIN},
                            auth={"token": self.token}, transports=["websocket"],
                            wait_timeout=10)
        self.threads = [threading.Thread(target=target, daemon=True, name=f"bystander-{n}")
                        for n, target in enumerate((self._health, self._poster, self._rss))]
        for thread in self.threads:
            thread.start()
        time.sleep(self.WARMUP)
        self.rss_base = self.rss_peak = rss_kb(self.pid)  # the bystander itself included
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            time.sleep(self.TAIL)
        self.stop.set()
        for thread in self.threads:
            thread.join(self.TIMEOUT * 2)
        deadline = time.monotonic() + self.GRACE
        while time.monotonic() < deadline and self.missing():
            time.sleep(0.05)
        self.rss_peak = max(self.rss_peak, rss_kb(self.pid))
        self.still_connected = self.client.connected
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.figures.update(self.summary())
        if exc_type is None:
            self.check()
        return False

    # -- results

    def missing(self) -> list[int]:
        with self.lock:
            return [seq for seq in self.sent if seq not in self.arrived]

    @property
    def delivery_worst(self) -> float:
        now = time.monotonic()
        with self.lock:
            return max([self.arrived.get(seq, now) - sent for seq, sent in self.sent.items()],
                       default=0.0)

    @property
    def rss_growth_mb(self) -> float:
        """The worker's peak VmRSS during the attack over its VmRSS before, in MiB."""
        return (self.rss_peak - self.rss_base) / 1024

    def summary(self) -> dict[str, Any]:
        return {
            "worker": self.server.worker,
            "bystander_health_worst_s": round(self.health_worst, 3),
            "bystander_health_checks": self.health_checks,
            "bystander_health_errors": len(self.health_errors),
            "bystander_delivery_worst_s": round(self.delivery_worst, 3),
            "bystander_sent": len(self.sent),
            "bystander_missing": len(self.missing()),
            "bystander_post_errors": self.post_errors[:5],
            "bystander_still_connected": self.still_connected,
            "rss_base_mb": round(self.rss_base / 1024, 1),
            "rss_growth_mb": round(self.rss_growth_mb, 1),
        }

    def check(self) -> None:
        problems = []
        if self.health_worst >= LIMIT_S:
            problems.append(f"/healthz took up to {self.health_worst:.2f}s")
        if self.health_errors:
            problems.append(f"/healthz failed: {self.health_errors[:5]}")
        if self.delivery_worst >= LIMIT_S:
            problems.append(f"a notification took up to {self.delivery_worst:.2f}s")
        if self.missing() or self.post_errors:
            problems.append(f"{len(self.missing())} of {len(self.sent)} notifications never "
                            f"arrived; failed posts: {self.post_errors[:5]}")
        if not self.still_connected:
            problems.append("the bystander's socket was dropped")
        assert not problems, "bystander: " + "; ".join(problems)


def eio_url(server: ServerProcess, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"EIO": "4", "transport": "polling",
                                               **params}.items())
    return f"{server.url}/socket.io/?{query}"


def attacker(ip: str = ATTACKER_IP, **headers: str) -> dict[str, str]:
    """HTTP headers of a request from the attacker's own (forwarded) address."""
    return {"X-Forwarded-For": ip, **headers}


def poll_open(server: ServerProcess, ip: str = ATTACKER_IP) -> str:
    """An Engine.IO polling handshake; returns the session id."""
    response = requests.get(eio_url(server), headers=attacker(ip), timeout=5)
    assert response.status_code == 200, (response.status_code, response.text[:200])
    return json.loads(response.text[1:])["sid"]


def poll_sign_in(server: ServerProcess, sid: str, user_token: str,
                 ip: str = ATTACKER_IP) -> list[str]:
    """Socket.IO CONNECT over polling; drains the answers up to sync_complete."""
    response = requests.post(eio_url(server, sid=sid), data="40" + json.dumps(
        {"token": user_token}), headers=attacker(ip), timeout=5)
    assert response.status_code == 200, (response.status_code, response.text[:200])
    packets: list[str] = []
    for _ in range(4):
        response = requests.get(eio_url(server, sid=sid), headers=attacker(ip), timeout=8)
        assert response.status_code == 200, (response.status_code, response.text[:200])
        packets += response.text.split("\x1e")
        if any(p.startswith('42["sync_complete"') for p in packets):
            return packets
    raise AssertionError(f"no sync_complete over polling: {packets}")


def ws_url(server: ServerProcess, sid: str | None = None) -> str:
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    return url + (f"&sid={sid}" if sid else "")


def frame(payload: bytes | str, opcode: int = ABNF.OPCODE_TEXT, fin: bool = True) -> bytes:
    """One masked client frame on the wire, hand-built (any opcode, FIN, length)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return ABNF.create_frame(payload, opcode, fin=int(fin)).format()


class RawSocket:
    """A WebSocket that speaks Engine.IO and Socket.IO by hand (websocket-client), from
    the attacker's address, with no Origin unless given one (a script, not a page)."""

    def __init__(self, server: ServerProcess, ip: str = ATTACKER_IP,
                 origin: str | None = None, timeout: float = 5) -> None:
        headers = [f"X-Forwarded-For: {ip}"] + ([f"Origin: {origin}"] if origin else [])
        self.ws = websocket.create_connection(ws_url(server), header=headers, timeout=timeout,
                                              suppress_origin=True)
        self.opened_at = time.monotonic()
        self.texts: list[str] = []
        self.ended: str | None = None  # "close <code>", "eof", "reset", "broken stream"
        self.ended_at: float | None = None
        self.close_code: int | None = None
        self.stuck = False  # a send blocked: the server stopped reading from us
        first = self.read(timeout)
        assert first and first.startswith("0{"), f"no Engine.IO open packet: {first!r}"
        self.handshake = json.loads(first[1:])

    def _end(self, how: str) -> None:
        if self.ended is None:
            self.ended, self.ended_at = how, time.monotonic()

    def readable(self) -> bool:
        if self.ended is not None:
            return False
        try:
            return bool(select.select([self.ws.sock], [], [], 0)[0])
        except (OSError, ValueError, TypeError):
            self._end("eof")
            return False

    def read(self, timeout: float) -> str | bytes | None:
        """The next Engine.IO message (pings answered, control frames noted), or None
        on timeout or once the connection has ended."""
        deadline = time.monotonic() + timeout
        while self.ended is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self.ws.sock.settimeout(remaining)
                opcode, data = self.ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                return None
            except websocket.WebSocketProtocolException:
                self._end("broken stream")  # e.g. an HTTP error page written into it
                return None
            except (websocket.WebSocketException, OSError, AttributeError):
                self._end("eof")
                return None
            if opcode == ABNF.OPCODE_CLOSE:
                raw = data.data or b""
                self.close_code = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else None
                self._end(f"close {self.close_code}")
                return None
            if opcode not in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
                continue
            if hasattr(data, "data"):
                data = data.data
            message = data.decode("utf-8", "replace") if opcode == ABNF.OPCODE_TEXT else data
            if message == "2":
                self.send("3")
                continue
            self.texts.append(message)
            return message
        return None

    def send(self, text: str) -> bool:
        """Sends one text message; False once the connection has ended."""
        if self.ended is not None:
            return False
        try:
            self.ws.send(text)
            return True
        except (websocket.WebSocketTimeoutException, TimeoutError):
            self.stuck = True  # the server stopped reading from us
            return False
        except (websocket.WebSocketException, OSError):
            self._end("reset")
            return False

    def send_raw(self, data: bytes, timeout: float = 5) -> bool:
        """Bytes as they are (hand-built frames); False once the connection has ended or
        when the server would not take them within ``timeout``."""
        if self.ended is not None:
            return False
        try:
            self.ws.sock.settimeout(max(timeout, 0.01))
            with self.ws.lock:
                self.ws.sock.sendall(data)
            return True
        except TimeoutError:
            self.stuck = True
            return False
        except (OSError, AttributeError):  # AttributeError: websocket-client dropped it
            self._end("reset")
            return False

    def sign_in(self, user_token: str, **auth: Any) -> list[str]:
        """Socket.IO CONNECT with a token; the messages up to ``auth_success``."""
        assert self.send("40" + json.dumps({"token": user_token, **auth}))
        seen: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = self.read(deadline - time.monotonic())
            if message is None:
                break
            seen.append(message)
            if message.startswith("44"):
                raise AssertionError(f"CONNECT refused: {message}")
            if message.startswith('42["auth_success"'):
                return seen
        raise AssertionError(f"no auth_success (ended: {self.ended}); got {seen}")

    def wait_end(self, timeout: float) -> float | None:
        """Reads until the server ends the connection; seconds since it opened, or None
        if it is still open after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.ended is None and time.monotonic() < deadline:
            self.read(deadline - time.monotonic())
        return None if self.ended is None else self.ended_at - self.opened_at

    def flood(self, blob: bytes, seconds: float, max_sends: int) -> dict[str, Any]:
        """Sends ``blob`` back to back for ``seconds`` (at most ``max_sends`` times), until
        the server ends the connection or stops reading. Returns the figures."""
        started = time.monotonic()
        deadline = started + seconds
        sends = 0
        while sends < max_sends and self.ended is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self.readable():
                self.read(0.2)  # a close frame, a ping or an answer
                continue
            if not self.send_raw(blob, timeout=remaining):
                break
            sends += 1
        elapsed = time.monotonic() - started
        return {"sends": sends, "sent_mb": round(sends * len(blob) / 2**20, 2),
                "seconds": round(elapsed, 2), "sent_mb_per_s": round(
                    sends * len(blob) / 2**20 / max(elapsed, 1e-3), 1),
                "ended": self.ended, "stuck": self.stuck,
                "ended_after_s": None if self.ended_at is None else
                round(self.ended_at - started, 2)}

    def close(self) -> None:
        try:
            self.ws.shutdown()
        except Exception:
            pass


def notify_user(server: ServerProcess, user_id: str, title: str, **fields: Any) -> int:
    """POST one notification as the producer; returns its id."""
    response = requests.post(server.url + "/api/notifications", timeout=10,
                             headers={"Authorization": f"Bearer {SERVER_API_KEY}"},
                             json={"user_id": user_id, "type": "attack", "title": title,
                                   **fields})
    assert response.status_code == 201, response.text
    return response.json()["notifications"][0]["id"]


def received(sockets: list[RawSocket], marker: str, timeout: float) -> list[RawSocket]:
    """Which of ``sockets`` receive a message containing ``marker`` within ``timeout``."""
    got: list[RawSocket] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [s for s in sockets if s not in got and s.ended is None]
        if not waiting:
            break
        try:
            ready = select.select([s.ws.sock for s in waiting], [], [], 0.05)[0]
        except (OSError, ValueError):
            ready = [s.ws.sock for s in waiting]
        for raw in waiting:
            if raw.ws.sock in ready:
                message = raw.read(0.2)
                if isinstance(message, str) and marker in message:
                    got.append(raw)
    return got
