"""Side-by-side benchmark: this product, stock Flask-SocketIO, Node socket.io.

    .venv/bin/python -m bench            # full run: 1k/5k/10k, 3 repetitions (~20 min)
    .venv/bin/python -m bench --quick    # N=200, one repetition, a few seconds per server

The product also runs the producer scenarios at the notify size: `bulk` (POST
/api/notifications/bulk) and `outbox` (rows committed into notification_outbox in
PostgreSQL), each stepping through --bulk-rates / --outbox-rates.

Writes bench/results/<stamp>.json, and for full runs the table in docs/BENCHMARKS.md
and docs/bench.png. See docs/BENCHMARKS.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.servers import (
    API_KEY,
    BENCH,
    LOADGEN_CORE,
    ROOT,
    SECRET,
    SERVERS,
    Server,
    cpu_seconds,
    cpu_ticks_seconds,
    pinned,
    raise_nofile,
    rss_bytes,
)

RESULTS = BENCH / "results"
DEFAULT_PRODUCER_RATES = "1000,2000,3000,5000,7500,10000"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N=200, one repetition (CI)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--servers", default=",".join(SERVERS),
                   help="comma list of " + "/".join(SERVERS))
    p.add_argument("--sizes", default="1000,5000,10000", help="connect sizes; the middle one "
                   "(or the only one) also runs the notify scenarios")
    p.add_argument("--notify-at", type=int, default=None, help="connected sockets during "
                   "the notify scenarios (default: 5000 if among --sizes, else the middle)")
    p.add_argument("--rate", type=float, default=500, help="targeted notifies per second")
    p.add_argument("--seconds", type=float, default=10, help="targeted notify duration")
    p.add_argument("--batch", type=int, default=1000, help="users in the batch request")
    p.add_argument("--batch-repeat", type=int, default=5, help="batch requests per repetition")
    p.add_argument("--fanout", type=int, default=5000, help="users in the fan-out")
    p.add_argument("--capacity-rates", default="250,500,1000,1500,2000,3000,4000",
                   help="the capacity scenario's targeted rates, in order; '' skips it")
    p.add_argument("--capacity-seconds", type=float, default=10,
                   help="duration of each capacity step")
    p.add_argument("--bulk-rates", default=DEFAULT_PRODUCER_RATES,
                   help="the bulk scenario's rates (notifications a second, one user each), "
                   "in order; '' skips it")
    p.add_argument("--outbox-rates", default=DEFAULT_PRODUCER_RATES,
                   help="the outbox scenario's rates, in order; '' skips it")
    p.add_argument("--producer-seconds", type=float, default=10,
                   help="duration of each bulk and outbox step")
    p.add_argument("--tick-ms", type=float, default=20,
                   help="bulk and outbox producers send every this many ms: one bulk request, "
                   "or one outbox transaction, with the notifications due in the tick")
    p.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                   help="PostgreSQL where the outbox scenario creates (and then drops) a "
                   "database of its own (env BENCH_PG_URL)")
    p.add_argument("--no-receipts", action="store_true", help="skip the receipts scenario "
                   "(the product's cost of delivery receipts, on and off)")
    p.add_argument("--no-deflate", action="store_true", help="clients do not offer "
                   "permessage-deflate")
    p.add_argument("--async-mode", default="eventlet", choices=("eventlet", "gevent"),
                   help="worker class for the product (the baseline stays stock eventlet)")
    p.add_argument("--product-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the product (e.g. GC_TUNING=0 for 'before')")
    p.add_argument("--label", default="", help="tag stored in the JSON (e.g. 'before gc tuning')")
    p.add_argument("--write-docs", action="store_true", help="write the table into "
                   "docs/BENCHMARKS.md and the plot to docs/bench.png (default for full runs)")
    p.add_argument("--no-docs", action="store_true", help="never touch docs/")
    p.add_argument("--docs-block", default="table", help="which generated block of "
                   "docs/BENCHMARKS.md to replace (e.g. 'gevent' for --async-mode gevent)")
    p.add_argument("--profile", action="store_true", help="py-spy record the product worker "
                   "during each scenario (collapsed stacks beside the JSON)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.rate, args.seconds = "200", 1, 100, 2
        args.batch, args.batch_repeat, args.fanout, args.notify_at = 200, 1, 200, 200
        args.capacity_rates, args.capacity_seconds = "100,200", 1
        args.bulk_rates = args.outbox_rates = "200,500"
        args.producer_seconds = 1
    # Past the run and its drain: the emits again of the run without receipts come
    # after the load generator stopped counting, so they are not taken for duplicates.
    args.receipt_push_after = args.seconds + 5.0
    return args


def ensure_node_deps() -> None:
    """`npm ci --prefix bench` unless bench/node_modules already matches the lock."""
    marker = BENCH / "node_modules" / ".package-lock.json"
    lock = BENCH / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(["npm", "ci", "--prefix", str(BENCH), "--no-audit", "--no-fund"],
                   check=True, capture_output=True)


class LoadGen:
    """The Node load generator, driven by JSON lines."""

    def __init__(self, url: str, deflate: bool) -> None:
        argv = ["node", str(BENCH / "loadgen.js"), "--url", url, "--secret", SECRET,
                "--api-key", API_KEY, *([] if deflate else ["--no-deflate"])]
        self.proc = subprocess.Popen(pinned(argv, LOADGEN_CORE), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def run(self, **cmd: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator died during {cmd}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"load generator: {out['error']}")
        return out

    def close(self) -> None:
        try:
            self.run(cmd="exit")
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


PROFILE_DIR: Path | None = None


def measured(server: Server, load: LoadGen, **cmd: Any) -> dict[str, Any]:
    """Run one load command with the server's CPU (both clocks) around it, and for the
    product the rows it stored per commit."""
    pid = server.measured_pid()
    # One profile per step: a rate in the name keeps each step's.
    spy = _start_profile(server, cmd["cmd"] + (f"-{cmd['rate']:g}" if "rate" in cmd else ""))
    writes0 = server.write_counters()
    if writes0 is not None:
        time.sleep(0.5)  # the scrape's garbage is collected before the scenario starts
    cpu0, ticks0 = cpu_seconds(pid), cpu_ticks_seconds(pid)
    try:
        out = load.run(**cmd)
    finally:
        _stop_profile(spy)
    out["cpu_s"] = cpu_seconds(pid) - cpu0
    out["cpu_ticks_s"] = cpu_ticks_seconds(pid) - ticks0
    writes1 = server.write_counters()
    if writes0 and writes1 and writes1[1] > writes0[1]:
        out["rows_per_commit"] = (writes1[0] - writes0[0]) / (writes1[1] - writes0[1])
    return out


def _start_profile(server: Server, scenario: str) -> subprocess.Popen | None:
    if PROFILE_DIR is None or server.name != "product":
        return None
    out = PROFILE_DIR / f"profile-{server.name}-{scenario}-{server.port}.txt"
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format",
                            "raw", "--rate", "200", "-o", str(out), "-p",
                            str(server.measured_pid())], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # py-spy attaches before the scenario starts
    return spy


def _stop_profile(spy: subprocess.Popen | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(30)


# A capacity step holds when every notification arrived exactly once, none was
# refused, and the 99th percentile stayed within this.
CAPACITY_P99_MS = 50


def capacity(server: Server, load: LoadGen, args: argparse.Namespace) -> dict[str, Any]:
    """Targeted notifies at rising rates until one step misses: the highest rate the
    server sustains with p99 within CAPACITY_P99_MS and nothing lost."""
    steps: list[dict[str, Any]] = []
    held = 0.0
    for rate in (float(r) for r in args.capacity_rates.split(",") if r):
        # Stragglers get 30 s: a late arrival is latency, only a missing one is loss.
        step = measured(server, load, cmd="targeted", rate=rate,
                        seconds=args.capacity_seconds, drain_ms=30000)
        step["slowest"] = step["slowest"][:30]  # enough to tell a stall from a trend
        step["held"] = (step["lost"] == 0 and step["duplicates"] == 0
                        and step["http_errors"] == 0 and step["p99_ms"] is not None
                        and step["p99_ms"] <= CAPACITY_P99_MS)
        steps.append(step)
        if not step["held"]:
            break
        held = rate
        time.sleep(1.0)  # the next step starts on a settled server
    return {"held_rate": held, "steps": steps, "p99_limit_ms": CAPACITY_P99_MS}


RECEIPT_COUNTERS = {
    "stored": "notifier_notifications_stored_total",
    "notification_commits": "notifier_notification_write_groups_total",
    "receipt_commits": "notifier_receipt_write_groups_total",
    "dispatch_commits": "notifier_push_dispatch_transactions_total",
    "delivered": "notifier_notifications_delivered_total",
    "redelivered": "notifier_notifications_redelivered_total",
}


# After a receipts run, how long until its last receipts are written: the load
# generator returns 400 ms after the last arrival, the server groups receipts for up
# to 50 ms. The delivery checks of the run fall due PUSH_AFTER (seconds + 5 s) after
# each notification, so this window never holds one.
RECEIPT_WINDOW_S = 1.0
REDELIVERED = RECEIPT_COUNTERS["redelivered"]


def receipts_cost(size: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The product's cost of delivery receipts: targeted notifies at --rate for
    --seconds with ``size`` sockets, once with clients sending no receipts ("off"),
    once with every socket sending them as the reference client does ("on").

    Two CPU figures per mode, each net of the server's idle CPU over as long (its
    pings): ``cpu_per_delivered_us`` over the run and RECEIPT_WINDOW_S after it (every
    notification delivered, every receipt written, no delivery check due yet): what
    receipts cost, the figure issue 22's 1.25x target compares (``ratio_on_off``);
    and ``cpu_per_notify_us`` until every delivery check has fallen due (PUSH_AFTER
    later) and run, when, without receipts, each notification is emitted again.
    Database writes are the transactions that stored notifications, recorded receipts
    and ran the dispatcher, per notification."""
    extra = dict(kv.split("=", 1) for kv in args.product_env)
    push_after = args.receipt_push_after
    server = Server("product", workdir, async_mode=args.async_mode,
                    extra_env={**extra, "PUSH_AFTER": str(push_after)})
    server.start()
    load = LoadGen(server.url, deflate=not args.no_deflate)
    out: dict[str, Any] = {"push_after_s": push_after, "rate": args.rate,
                           "seconds": args.seconds, "window_s": RECEIPT_WINDOW_S}
    try:
        load.run(cmd="connect", n=size)
        pid, settle = server.measured_pid(), push_after + 3
        time.sleep(1.0)
        cpu0 = cpu_seconds(pid)
        time.sleep(settle)
        idle_per_s = (cpu_seconds(pid) - cpu0) / settle
        out["idle_cpu_share"] = idle_per_s

        def net_cpu(since_cpu: float, since_t: float) -> float:
            return cpu_seconds(pid) - since_cpu - idle_per_s * (time.monotonic() - since_t)

        for mode in ("off", "on"):
            before = server.counters(*RECEIPT_COUNTERS.values())
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            step = load.run(cmd="targeted", rate=args.rate, seconds=args.seconds,
                            receipts=mode == "on")
            time.sleep(RECEIPT_WINDOW_S)
            window_cpu = net_cpu(cpu0, t0)
            window = server.counters(*RECEIPT_COUNTERS.values())
            time.sleep(max(settle - RECEIPT_WINDOW_S, 0))  # every check falls due and runs
            cpu = net_cpu(cpu0, t0)
            after = server.counters(*RECEIPT_COUNTERS.values())
            d = {key: after[name] - before[name] for key, name in RECEIPT_COUNTERS.items()}
            stored = max(d["stored"], 1)
            delivered = max(step["received"], 1)
            commits = d["notification_commits"] + d["receipt_commits"] + d["dispatch_commits"]
            out[mode] = {**d, "cpu_per_notify_us": 1e6 * cpu / stored,
                         "cpu_per_delivered_us": 1e6 * window_cpu / delivered,
                         "window_redelivered": window[REDELIVERED] - before[REDELIVERED],
                         "writes_per_notification": commits / stored,
                         "p50_ms": step["p50_ms"], "p99_ms": step["p99_ms"],
                         "received": step["received"], "lost": step["lost"],
                         "duplicates": step["duplicates"], "http_errors": step["http_errors"]}
        out["ratio_on_off"] = (out["on"]["cpu_per_delivered_us"]
                               / out["off"]["cpu_per_delivered_us"]
                               if out["off"]["cpu_per_delivered_us"] > 0 else None)
        return out
    finally:
        load.close()
        server.stop()


# A bulk or outbox step holds when every notification arrived exactly once, none was
# refused, the producer kept the rate, and the 99th percentile stayed within this.
PRODUCER_P99_MS = 100
PRODUCER_RATE_KEPT = 0.95  # share of the step's rate the producer must have sent


def producer_steps(server: Server, load: LoadGen, kind: str, args: argparse.Namespace,
                   **extra: Any) -> dict[str, Any]:
    """The ``kind`` load ("bulk" or "outbox") at rising rates until one step misses."""
    rates = [float(r) for r in getattr(args, f"{kind}_rates").split(",") if r]
    steps: list[dict[str, Any]] = []
    held = 0.0
    for rate in rates:
        step = measured(server, load, cmd=kind, rate=rate, seconds=args.producer_seconds,
                        tick_ms=args.tick_ms, drain_ms=30000, **extra)
        step["slowest"] = step["slowest"][:30]
        step["cpu_per_delivered_us"] = (1e6 * step["cpu_s"] / step["received"]
                                        if step["received"] else None)
        step["held"] = (step["lost"] == 0 and step["duplicates"] == 0
                        and step["http_errors"] == 0 and step["p99_ms"] is not None
                        and step["p99_ms"] <= PRODUCER_P99_MS
                        and (step.get("sent_rate") or 0) >= PRODUCER_RATE_KEPT * rate)
        steps.append(step)
        if not step["held"]:
            break
        held = rate
        time.sleep(1.0)  # the next step starts on a settled server
    return {"held_rate": held, "steps": steps, "p99_limit_ms": PRODUCER_P99_MS,
            "tick_ms": args.tick_ms, "step_seconds": args.producer_seconds}


class PgDatabase:
    """A database of the bench's own on the PostgreSQL at ``admin_url``, dropped after."""

    def __init__(self, admin_url: str) -> None:
        from urllib.parse import unquote, urlsplit

        import pg8000.native

        u = urlsplit(admin_url)
        self._connect = lambda db: pg8000.native.Connection(
            unquote(u.username or "postgres"), host=u.hostname or "127.0.0.1",
            port=u.port or 5432, database=db,
            password=unquote(u.password) if u.password else None, timeout=30)
        self._admin_db = u.path.lstrip("/") or "postgres"
        self.name = f"bench_outbox_{os.getpid()}_{int(time.time())}"
        self.url = u._replace(path="/" + self.name).geturl()

    def create(self) -> None:
        admin = self._connect(self._admin_db)
        try:
            admin.run(f'CREATE DATABASE "{self.name}"')
        finally:
            admin.close()

    def version(self) -> str:
        conn = self._connect(self.name)
        try:
            return conn.run("SHOW server_version")[0][0].split()[0]
        finally:
            conn.close()

    def drop(self) -> None:
        admin = self._connect(self._admin_db)
        try:
            admin.run(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            admin.close()


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def producer_scenario(kind: str, size: int, args: argparse.Namespace,
                      workdir: Path) -> dict[str, Any]:
    """A fresh product server with ``size`` sockets and the ``kind`` steps: "bulk" on
    the default SQLite, "outbox" on a PostgreSQL database of its own with
    OUTBOX_ENABLED=1 (notifications stored there too, as such a deployment runs)."""
    extra = dict(kv.split("=", 1) for kv in args.product_env)
    db: PgDatabase | None = None
    load_extra: dict[str, Any] = {}
    if kind == "outbox":
        db = PgDatabase(args.pg_url)
        try:
            db.create()
        except Exception as exc:  # noqa: BLE001 - any failure to reach PostgreSQL
            reason = f"PostgreSQL at {args.pg_url} not usable: {exc}"
            if args.quick and not _ci():
                print(f"[bench] outbox skipped: {reason}", file=sys.stderr, flush=True)
                return {"skipped": reason}
            raise RuntimeError(reason + " (--outbox-rates '' skips the outbox)") from exc
        extra |= {"DATABASE_URL": db.url, "OUTBOX_ENABLED": "1"}
        load_extra["pg"] = db.url
    server = Server("product", workdir, async_mode=args.async_mode, extra_env=extra)
    try:
        server.start()
        load = LoadGen(server.url, deflate=not args.no_deflate)
        try:
            conn = load.run(cmd="connect", n=size)
            time.sleep(1.0)
            out = producer_steps(server, load, kind, args, **load_extra)
            out["connected"] = conn["connected"]
            out["database"] = "postgresql " + db.version() if db else "sqlite"
            return out
        finally:
            load.close()
    finally:
        try:
            server.stop()
        finally:
            if db is not None:
                db.drop()


def gc_pauses(path: Path, since: float, until: float) -> dict[str, Any]:
    """Pauses the server's probe recorded between two wall-clock times."""
    if not path.exists():
        return {"max_ms": None, "gen2": 0, "gen2_ms": []}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if since <= r["t"] <= until]
    census = [r for r in rows if r.get("census")]
    rows = [r for r in rows if not r.get("census")]
    auto = [r for r in rows if not r.get("forced")]
    forced = [r["ms"] for r in rows if r.get("forced") and r["gen"] == 2]
    return {"max_ms": max((r["ms"] for r in auto), default=0.0),
            "gen2": sum(1 for r in auto if r["gen"] == 2),
            "gen2_ms": [r["ms"] for r in auto if r["gen"] == 2],
            "forced_full_ms": max(forced, default=None),
            "census": census[-1] if census else None}


def force_full_collection(server: Server) -> None:
    """Ask a Python worker's GC probe for one full pass (SIGUSR2), and give it time."""
    if server.name == "node":
        return
    os.kill(server.measured_pid(), signal.SIGUSR2)
    # The pass and the census that follows it take seconds at 10k sockets.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.gc_log.exists() and '"census"' in server.gc_log.read_text()[-4000:]:
            return
        time.sleep(0.2)


def one_size(name: str, size: int, notify: bool, top: bool, args: argparse.Namespace,
             workdir: Path) -> dict[str, Any]:
    """Start a fresh server, connect ``size`` sockets, and run the notify scenarios."""
    extra = dict(kv.split("=", 1) for kv in args.product_env) if name == "product" else {}
    server = Server(name, workdir, async_mode=args.async_mode, extra_env=extra)
    server.start()
    load = LoadGen(server.url, deflate=not args.no_deflate)
    try:
        time.sleep(0.5)
        pid = server.measured_pid()
        rss0 = rss_bytes(pid)
        started = time.time()
        conn = measured(server, load, cmd="connect", n=size)
        time.sleep(1.0)  # let buffers settle before reading RSS
        rss1 = rss_bytes(pid)
        result: dict[str, Any] = {
            "connect": {**conn, "rss_before": rss0, "rss_after": rss1,
                        "rss_per_conn": (rss1 - rss0) / max(conn["connected"], 1),
                        "cpu_per_connect_ms": conn["cpu_s"] * 1000 / max(conn["connected"], 1)},
        }
        if notify:
            result["targeted"] = measured(server, load, cmd="targeted", rate=args.rate,
                                          seconds=args.seconds)
            result["batch"] = [measured(server, load, cmd="batch", users=args.batch)
                               for _ in range(args.batch_repeat)]
            result["fanout"] = measured(server, load, cmd="fanout", users=args.fanout)
            if args.capacity_rates:
                result["capacity"] = capacity(server, load, args)
        if top:
            force_full_collection(server)
        result["gc"] = gc_pauses(server.gc_log, started, time.time())
        result["rss_end"] = rss_bytes(pid)
        return result
    finally:
        load.close()
        server.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    notify_size = args.notify_at or (5000 if 5000 in sizes else sizes[len(sizes) // 2])
    if notify_size not in sizes:
        raise SystemExit(f"--notify-at {notify_size} must be one of --sizes")
    names = [n for n in args.servers.split(",") if n]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for rep in range(args.reps):
            # Interleaved: every server runs once per repetition, in turn.
            for name in names:
                sizes_out = {}
                for size in sizes:
                    print(f"[bench] rep {rep + 1}/{args.reps} {name} N={size}", file=sys.stderr,
                          flush=True)
                    sizes_out[str(size)] = one_size(name, size, size == notify_size,
                                                    size == sizes[-1], args, Path(tmp))
                if name == "product" and not args.no_receipts:
                    print(f"[bench] rep {rep + 1}/{args.reps} product receipts N={notify_size}",
                          file=sys.stderr, flush=True)
                    sizes_out[str(notify_size)]["receipts"] = receipts_cost(
                        notify_size, args, Path(tmp))
                if name == "product":
                    for kind in ("bulk", "outbox"):
                        if not getattr(args, f"{kind}_rates"):
                            continue
                        print(f"[bench] rep {rep + 1}/{args.reps} product {kind} "
                              f"N={notify_size}", file=sys.stderr, flush=True)
                        try:
                            found = producer_scenario(kind, notify_size, args, Path(tmp))
                        except Exception as exc:  # noqa: BLE001 - the run's other figures stay
                            print(f"[bench] {kind} failed: {exc}", file=sys.stderr, flush=True)
                            found = {"error": str(exc)[:2000]}
                        sizes_out[str(notify_size)][kind] = found
                runs[name].append(sizes_out)
    return {"meta": meta(args, sizes, notify_size), "runs": runs}


def meta(args: argparse.Namespace, sizes: list[int], notify_size: int) -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "?"

    from importlib.metadata import version as pkg

    def node_pkg(name: str) -> str:
        return json.loads((BENCH / f"node_modules/{name}/package.json").read_text())["version"]

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "label": args.label, "quick": args.quick, "reps": args.reps, "sizes": sizes,
        "notify_size": notify_size, "rate": args.rate, "seconds": args.seconds,
        "batch": args.batch, "batch_repeat": args.batch_repeat, "fanout": args.fanout,
        "capacity_rates": args.capacity_rates, "capacity_seconds": args.capacity_seconds,
        "bulk_rates": args.bulk_rates, "outbox_rates": args.outbox_rates,
        "producer_seconds": args.producer_seconds, "tick_ms": args.tick_ms,
        "producer_p99_ms": PRODUCER_P99_MS,
        "deflate_offered": not args.no_deflate, "product_env": args.product_env,
        "product_worker": args.async_mode,
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(), "node": version(["node", "--version"])},
        "versions": {p: pkg(p) for p in ("Flask-SocketIO", "python-socketio", "python-engineio",
                                         "eventlet", "gevent", "gunicorn", "SQLAlchemy",
                                         "limits")}
        | {"socket.io (node)": node_pkg("socket.io"), "pg (node)": node_pkg("pg")},
        "commit": version(["git", "rev-parse", "--short", "HEAD"]),
    }


def _loadavg() -> str:
    """The machine's 1/5/15-minute load: other work running beside the bench."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> int:
    global PROFILE_DIR
    args = parse_args(argv)
    if args.profile:
        PROFILE_DIR = args.results
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    ensure_node_deps()
    load_before = _loadavg()
    data = run(args)
    data["meta"]["loadavg_before_after"] = [load_before, _loadavg()]
    data["summary"] = report.summarize(data)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    tag = "quick" if args.quick else (args.label.replace(" ", "-") or "full")
    out = args.results / f"{stamp}-{tag}.json"
    out.write_text(json.dumps(data, indent=1))
    print(report.markdown_table(data))
    print()
    print(report.producers_table(data))
    print(f"[bench] results: {out}", file=sys.stderr)
    if (args.write_docs or not args.quick) and not args.no_docs:
        report.write_docs(data, ROOT / "docs", args.docs_block)
    return 0 if report.lossless(data) else 1


if __name__ == "__main__":
    sys.exit(main())
