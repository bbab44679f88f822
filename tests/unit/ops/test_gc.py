"""The worker's GC settings (utils/ops/gc_tuning.py) and the bench's pause probe
(utils/ops/gc_pauses.py)."""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from pathlib import Path

import pytest

from utils.ops import gc_pauses as gcpauses
from utils.ops import gc_tuning as gctune
from utils.services import services


@pytest.fixture
def restore_gc():
    thresholds = gc.get_threshold()
    callbacks = list(gc.callbacks)
    handler = signal.getsignal(signal.SIGUSR2)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks
    signal.signal(signal.SIGUSR2, handler)


def test_tuning_freezes_start_up_objects_and_raises_thresholds(restore_gc):
    gc.unfreeze()
    assert gctune.tune_after_start() is True
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold() == gctune.THRESHOLDS


@pytest.mark.parametrize("value", ["0", "off", "false"])
def test_gc_tuning_0_leaves_the_collector_alone(restore_gc, value, tmp_path):
    from app import create_app

    settings = services(create_app({"GC_TUNING": value, "INSTANCE_PATH": str(tmp_path),
                           "DATABASE_URL": "sqlite://"})).settings
    assert settings.gc_tuning is False
    gc.unfreeze()
    before = gc.get_threshold()
    assert gctune.tune_after_start(settings.gc_tuning) is False
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_probe_is_not_installed_without_its_variable(restore_gc):
    count = len(gc.callbacks)
    assert gcpauses.install_from_env({}) is None
    assert len(gc.callbacks) == count


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_probe_records_full_passes_and_a_forced_pass_on_sigusr2(restore_gc, tmp_path):
    log = tmp_path / "gc.jsonl"
    recorder = gcpauses.install_from_env({"GC_PAUSE_LOG": str(log)})
    assert recorder is not None and recorder in gc.callbacks
    gc.collect()
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(0.05)  # the handler runs between bytecodes of this thread
    rows = _lines(log)
    passes = [r for r in rows if not r.get("census")]
    assert [r["gen"] for r in passes if r["gen"] == 2] == [2, 2]
    assert [r["forced"] for r in passes if r["gen"] == 2] == [False, True]
    assert all(r["ms"] >= 0 for r in passes)
    [census] = [r for r in rows if r.get("census")]
    assert census["tracked"] > 0 and census["top"]
