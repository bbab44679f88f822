"""The client package in client/: where its build is, and what a test needs of it.

`npm ci --prefix client && npm run build --prefix client` (scripts/test.sh runs
both) writes client/dist/ and copies the browser-ready client and service worker to
static/notifications.js and static/notifications-sw.js, where /debug loads them.
Under CI=true a missing build, node or npm is a failure; elsewhere a skip with the
reason.
"""

from __future__ import annotations

import shutil

import pytest

from tests.support.servers import ROOT
from tests.support.services import in_ci

CLIENT = ROOT / "client"
DIST = CLIENT / "dist"
BUILD_COMMAND = "npm ci --prefix client && npm run build --prefix client"
# What the package's build writes, and the copies the server's /debug page loads.
BUILT = (DIST / "index.js", DIST / "index.d.ts", DIST / "react.js", DIST / "react.d.ts",
         DIST / "notifications-sw.js")
STATIC_COPIES = (ROOT / "static" / "notifications.js", ROOT / "static" / "notifications-sw.js")


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason}; under CI=true this must run (scripts/test.sh installs and "
                    "builds the client package)")
    pytest.skip(reason)


def missing_build() -> str | None:
    """Why the built package is not there, or None."""
    absent = [path for path in (*BUILT, *STATIC_COPIES) if not path.is_file()]
    if absent:
        names = ", ".join(str(path.relative_to(ROOT)) for path in absent)
        return f"the client package is not built ({names} missing): run {BUILD_COMMAND}"
    return None


def require_build() -> None:
    reason = missing_build()
    if reason:
        unavailable(reason)


def require_node() -> tuple[str, str]:
    """(node, npm) on PATH, with the client package's dependencies installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        unavailable("node and npm are needed on PATH for the client package's tests")
    if not (CLIENT / "node_modules" / "typescript").is_dir():
        unavailable(f"client/node_modules is not installed: run {BUILD_COMMAND}")
    return node, npm
