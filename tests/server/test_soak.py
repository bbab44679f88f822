"""Soak: sockets over two nodes behind the sticky HAProxy, a steady stream of
notifications, through PostgreSQL and Redis, on each worker. The clients send
receipts as the reference client does (tests/support/soak.js).

In every run, a short soak: 1,000 sockets, 200 notifications a second for 20 s.
The full soak (2,000 sockets for 60 s, a few minutes a worker) runs with:

    RUN_SOAK=1 .venv/bin/python -m pytest tests/server/test_soak.py -s

SOAK_SOCKETS, SOAK_RATE and SOAK_SECONDS change the load. The figures are printed
and written to the test's tmp directory as soak.json.

Nothing may be lost. While nothing fails (no node logs a queue outage), nothing
may arrive twice and no socket may reconnect either.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import uuid

import pytest

from tests.support.cluster import API_KEY, ORIGIN, Cluster, HAProxy, token
from tests.support.servers import ROOT
from tests.support.services import REDIS_HOST, REDIS_PORT, SHARED_REDIS, require_service

pytestmark = [
    pytest.mark.slow,
    pytest.mark.server,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.timeout(600),
]

FULL = os.environ.get("RUN_SOAK") == "1"
SOCKETS = int(os.environ.get("SOAK_SOCKETS", "2000" if FULL else "1000"))
RATE = float(os.environ.get("SOAK_RATE", "200"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "60" if FULL else "20"))
# Lines a node logs when the queue failed: then a re-sent duplicate is expected.
OUTAGE_LINES = ("publish failed", "subscription lost")


def raise_fd_limit(needed: int) -> None:
    """Lift this process's soft descriptor limit (children inherit it): the nodes,
    HAProxy and the client each hold a descriptor or two per socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if target < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@pytest.mark.parametrize("worker", ["eventlet", "gevent"])
def test_soak_loses_nothing_and_duplicates_nothing(worker, tmp_path, postgres_url):
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    raise_fd_limit(SOCKETS * 3 + 1000)
    cluster = Cluster(
        tmp_path,
        SHARED_REDIS,
        database_url=postgres_url,
        n=2,
        ASYNC_MODE=worker,
        PING_INTERVAL="25",
        PING_TIMEOUT="20",
        RATE_LIMIT_HTTP="0",
        RATE_LIMIT_API_KEY="0",
        LOG_LEVEL="WARNING",
    ).start()
    proxy = None
    try:
        proxy = HAProxy(tmp_path, "haproxy-sticky.cfg", cluster.nodes).start()
        prefix = uuid.uuid4().hex[:8]
        users = [f"soak-{prefix}-{i}" for i in range(SOCKETS)]
        config = {
            "url": proxy.url,
            "apiKey": API_KEY,
            "origin": ORIGIN,
            "users": users,
            "tokens": [token(u, ttl=3600) for u in users],
            "sockets": SOCKETS,
            "rate": RATE,
            "seconds": SECONDS,
            "producers": 16,
            "connectSeconds": 90 if FULL else 60,
            "connectBatch": 50,
            "connectPauseMs": 100,
            "drainSeconds": 15,
        }
        config_path = tmp_path / "soak-config.json"
        config_path.write_text(json.dumps(config))
        timeout = SECONDS + config["connectSeconds"] + config["drainSeconds"] + 90
        out = subprocess.run(
            ["node", str(ROOT / "tests/support/soak.js"), str(config_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        figures["sessions_per_node"] = {n: int(r["stot"]) for n, r in proxy.stats().items()}
        (tmp_path / "soak.json").write_text(json.dumps(figures, indent=2))
        print("\nsoak figures:", json.dumps(figures, indent=2))

        logs = cluster.logs()
        outage = [line for line in logs.splitlines() if any(o in line for o in OUTAGE_LINES)]
        assert figures["connected"] == SOCKETS, figures
        assert figures["held"] == SOCKETS, figures
        assert figures["sent"] >= 0.95 * RATE * SECONDS, figures
        assert figures["lost"] == 0, figures
        assert figures["receipts_failed"] == 0, figures
        if not outage:
            assert figures["duplicates"] == 0, figures
            assert figures["reconnects"] == 0 and figures["disconnects_during_load"] == 0, figures
        else:
            print("queue outage during the soak:", *outage[:5], sep="\n  ")
        assert "Invalid session" not in logs
        assert "Traceback" not in logs and "QueuePool limit" not in logs, logs[-3000:]
        assert all(v > 0 for v in figures["sessions_per_node"].values()), figures
    finally:
        if proxy:
            proxy.stop()
        cluster.stop()
