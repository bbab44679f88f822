"""The benchmark's quick mode runs end to end, so bench/ never rots.

Only completion and delivery are asserted (every socket connected, every
notification received exactly once, no producer error), never timings: this
machine is shared and its figures are noisy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT
from tests.support.services import PG_HOST, PG_PORT, in_ci, port_open

pytestmark = [pytest.mark.server]


def test_quick_bench_completes_and_loses_nothing(tmp_path: Path) -> None:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("the benchmark needs node and npm on PATH")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-docs", "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    [result_file] = tmp_path.glob("*-quick.json")
    data = json.loads(result_file.read_text())
    assert set(data["runs"]) == {"product", "baseline", "node"}
    for name, reps in data["runs"].items():
        res = reps[0]["200"]
        assert res["connect"]["connected"] == 200, name
        for scenario in (res["targeted"], res["fanout"], *res["batch"]):
            assert scenario["received"] == scenario["expected"] > 0, (name, scenario)
            assert scenario["lost"] == 0 and scenario["duplicates"] == 0, (name, scenario)
            assert scenario.get("http_errors", 0) == 0, (name, scenario)

    product = data["runs"]["product"][0]["200"]
    receipts = product["receipts"]
    for mode in ("off", "on"):
        assert receipts[mode]["received"] > 0 and receipts[mode]["lost"] == 0, receipts[mode]
        assert receipts[mode]["cpu_per_delivered_us"] > 0, receipts[mode]
    assert receipts["ratio_on_off"] > 0

    pg_present = in_ci() or port_open(PG_HOST, PG_PORT)
    for kind in ("bulk", "outbox"):
        scenario = product[kind]
        if kind == "outbox" and not pg_present:
            assert "skipped" in scenario  # quick mode skips it without PostgreSQL
            continue
        assert "skipped" not in scenario, scenario
        assert scenario["connected"] == 200
        assert scenario["steps"], scenario
        for step in scenario["steps"]:
            # Whatever the latency, what the producer committed or was accepted
            # arrives exactly once, in bulk requests or outbox transactions.
            assert step["received"] == step["expected"] == step["sent"] > 0, (kind, step)
            assert step["lost"] == 0 and step["duplicates"] == 0, (kind, step)
            assert step["http_errors"] == 0, (kind, step)
            assert step["cpu_per_delivered_us"] > 0, (kind, step)
        per = "per_request_mean" if kind == "bulk" else "per_transaction_mean"
        assert all(step[per] > 1 for step in scenario["steps"]), scenario["steps"]
