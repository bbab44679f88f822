"""The attack suite's fixtures: a real server per module and worker, the bystander
every attack runs beside, raw sockets, and the figures each test measured (the
library behind them is tests/support/attack.py).

- ``server``: gunicorn in production mode on a loopback port, one per test module and
  worker (``eventlet``, then ``gevent``), with the suite's settings (SUITE_SETTINGS)
  and a module's own ``SERVER_SETTINGS``.
- ``bystander(server)``: a context manager. Throughout the attack it GETs /healthz
  every 100 ms, keeps a user of its own connected over Socket.IO and posts that user
  a notification every 250 ms, and samples the worker's VmRSS. On a clean exit it
  asserts that the worst /healthz latency and the worst POST-to-arrival latency stayed
  under ``LIMIT_S`` and that every notification arrived.
- ``figures``: what each test measured, printed and, with ATTACK_REPORT=<file>,
  appended to that file as one JSON line per test (the before/after record).

The attacker and the bystander both come from 127.0.0.1; the server believes
X-Forwarded-For from there (TRUSTED_PROXIES), so the attacker sends
``X-Forwarded-For: 198.51.100.7`` (a header only) and per-address limits that hit it
leave the bystander alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.support.attack import WORKERS, Bystander, RawSocket, _settings_of, start_server
from tests.support.servers import (
    ServerProcess,
)

# ---------------------------------------------------------------- servers

@pytest.fixture(scope="module", params=WORKERS)
def server(request, tmp_path_factory):
    """A real server for this module and worker; a module may add ``SERVER_SETTINGS``."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    proc = start_server(tmp_path_factory, request.param, name, **_settings_of(request.module))
    yield proc
    proc.stop()


@pytest.fixture
def fresh_server(request, server, tmp_path_factory):
    """A server of the module's worker for this test alone: memory is measured on a
    worker no earlier attack has grown (freed memory stays in the process and would
    hide the next attack's growth)."""
    name = request.module.__name__.rsplit(".", 1)[-1] + "-fresh"
    proc = start_server(tmp_path_factory, server.worker, name, **_settings_of(request.module))
    yield proc
    proc.kill()  # our own process group; nothing to drain
    proc.stop()


# ---------------------------------------------------------------- figures

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def figures(request):
    """What the test measured: printed, and appended to $ATTACK_REPORT when set."""
    data: dict[str, Any] = {}
    yield data
    call = getattr(request.node, "rep_call", None)
    line = {"test": request.node.nodeid, "outcome": call.outcome if call else "error",
            **data}
    print("FIGURES", json.dumps(line, default=str))
    path = os.environ.get("ATTACK_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(line, default=str) + "\n")


# ---------------------------------------------------------------- the bystander

@pytest.fixture
def bystander(figures):
    """``with bystander(server) as by: <attack>``: see Bystander."""

    def _make(server: ServerProcess) -> Bystander:
        return Bystander(server, figures)

    return _make


# ---------------------------------------------------------------- raw Engine.IO

@pytest.fixture
def raw_sockets():
    """``raw_sockets(server, **kwargs)``: RawSockets, each shut at teardown."""
    made: list[RawSocket] = []

    def _make(server: ServerProcess, **kwargs: Any) -> RawSocket:
        made.append(RawSocket(server, **kwargs))
        return made[-1]

    yield _make
    for raw in made:
        raw.close()


