"""Issue 24, finding 5: each shipped HAProxy config starts as shipped, with only the
lines its header says to adapt (bind, servers, the stats socket), under an open-file
limit of 20,000, and proxies to a real node. Before, `maxconn 50000` stopped the start
with "Cannot raise FD limit to 100019"."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.cluster import DEPLOY, render
from tests.support.servers import free_port, gunicorn, server_env

pytestmark = [pytest.mark.server]

CONFIGS = sorted(p.name for p in DEPLOY.glob("*.cfg"))
FD_LIMIT = 20_000


def limited(limit: int = FD_LIMIT):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return apply


def edited_lines(shipped: str, rendered: str) -> set[str]:
    """The shipped lines that rendering changed (compared without the server block)."""
    return set(shipped.splitlines()) - set(rendered.splitlines())


def test_every_config_says_what_to_adapt():
    assert CONFIGS == ["haproxy-sticky.cfg", "haproxy-websocket.cfg"]
    for name in CONFIGS:
        head = (DEPLOY / name).read_text().split("\nglobal", 1)[0]
        assert "Adapt: the bind line, the server lines" in head, name


@pytest.mark.parametrize("name", CONFIGS)
def test_a_shipped_config_starts_under_a_20000_file_limit_and_proxies(tmp_path, name):
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("haproxy is not installed")
    node = gunicorn(tmp_path, server_env(tmp_path)).start()
    try:
        port = free_port()
        shipped = (DEPLOY / name).read_text()
        rendered = render(shipped, port, [node], tmp_path / "stats.sock")
        # Only the bind, server and stats-socket lines changed.
        for line in edited_lines(shipped, rendered):
            assert re.match(r"\s*(bind |server |# stats socket )", line), line
        config = tmp_path / name
        config.write_text(rendered)
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True,
                               text=True, preexec_fn=limited(), timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        log = open(tmp_path / "haproxy.log", "wb")
        proxy = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                                 stderr=subprocess.STDOUT, preexec_fn=limited())
        try:
            answered = None
            for _ in range(50):
                try:
                    answered = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    if answered.status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if proxy.poll() is not None:
                    break
                subprocess.run(["sleep", "0.2"])
            output = (tmp_path / "haproxy.log").read_text(errors="replace")
            assert proxy.poll() is None, output
            assert answered is not None and answered.status_code == 200, output
            assert "Cannot raise FD limit" not in output
        finally:
            proxy.terminate()
            proxy.wait(10)
            log.close()
    finally:
        node.stop()
