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

pytestmark = [pytest.mark.server]


def test_quick_bench_completes_and_loses_nothing(tmp_path: Path) -> None:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("the benchmark needs node and npm on PATH")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-docs", "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
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
