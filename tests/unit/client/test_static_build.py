"""static/notifications.js and static/notifications-sw.js, the client package's build
that /debug loads, are committed so /debug works on a server that never ran npm. They
must not go stale: what HEAD holds is what a fresh build of client/src writes.

The fresh build goes to a temporary folder (client/dist and static/ are left alone):
the package's tsc with its two tsconfigs, then scripts/copy-static.mjs, as `npm run
build` does. Skips outside a git checkout.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.client_package import CLIENT, require_node
from tests.support.servers import ROOT

pytestmark = [pytest.mark.slow]

COMMITTED = ("static/notifications.js", "static/notifications-sw.js")


def committed(path: str) -> bytes | None:
    """The file as HEAD has it; None when HEAD has no such file."""
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True,
                           timeout=30)
    return shown.stdout if shown.returncode == 0 else None


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory) -> Path:
    if shutil.which("git") is None or subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"], cwd=ROOT, capture_output=True,
            timeout=30).returncode != 0:
        pytest.skip("not a git checkout: nothing committed to compare")
    node, _npm = require_node()
    out = tmp_path_factory.mktemp("fresh-build")
    tsc = str(CLIENT / "node_modules" / ".bin" / "tsc")
    for config in ("tsconfig.json", "tsconfig.sw.json"):
        built = subprocess.run([tsc, "-p", config, "--outDir", str(out / "dist")], cwd=CLIENT,
                               capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stdout + built.stderr
    (out / "static").mkdir()
    copied = subprocess.run([node, "scripts/copy-static.mjs", str(out / "dist"),
                             str(out / "static")], cwd=CLIENT, capture_output=True, text=True,
                            timeout=60)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    return out / "static"


@pytest.mark.parametrize("path", COMMITTED)
def test_the_committed_client_build_is_a_fresh_build_of_client_src(fresh_build, path):
    head = committed(path)
    assert head is not None, f"{path} is not committed: /debug needs it on every server"
    fresh = (fresh_build / Path(path).name).read_bytes()
    assert head == fresh, (
        f"{path} in HEAD is not what client/src builds to now: run `npm run build` in "
        f"client/ and commit {path} with the source")


def test_git_does_not_ignore_the_build():
    """A .gitignore entry would leave a rebuilt copy uncommitted without a word."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *COMMITTED], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.stdout.strip() == "", f"ignored by git: {ignored.stdout.strip()}"
