"""The client package in client/: where its build is, and what a test needs of it.

`npm ci --prefix client && npm run build --prefix client` (scripts/test.sh runs
both) writes client/dist/ and copies the browser-ready client and service worker to
static/notifications.js and static/notifications-sw.js, where /debug loads them (those
two are committed; tests/unit/client/test_static_build.py keeps them current).
Under CI=true a missing build, node or npm is a failure; elsewhere a skip with the
reason. StaticSite serves a browser test's page and the build on a loopback origin;
ReactPage is a React app's test page for Chromium (client/test/browser/).
"""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.support.loopback_http import LoopbackServer
from tests.support.servers import ROOT
from tests.support.services import in_ci

CLIENT = ROOT / "client"
DIST = CLIENT / "dist"
MODULES = CLIENT / "node_modules"
TEST_PAGES = CLIENT / "test"  # the package's own test scripts and pages
BUILD_COMMAND = "npm ci --prefix client && npm run build --prefix client"
# What the package's build writes, and the (committed) copies /debug loads.
BUILT = (DIST / "index.js", DIST / "index.d.ts", DIST / "react.js", DIST / "react.d.ts",
         DIST / "inbox.js", DIST / "notifications-sw.js")
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


def node_report(script: str, env: Mapping[str, str] | None = None,
                timeout: float = 120) -> tuple[dict[str, Any], subprocess.CompletedProcess]:
    """client/test/``script`` run by node against the build, with ``env`` added to this
    process's environment: the JSON report it prints as its last line, and the run."""
    node, _npm = require_node()
    require_build()
    result = subprocess.run([node, str(TEST_PAGES / script)], cwd=CLIENT,
                            env={**os.environ, **(env or {})}, capture_output=True, text=True,
                            timeout=timeout)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no report:\n{result.stderr}"
    return json.loads(lines[-1]), result


# -- the pages a browser test loads -----------------------------------------------------

Source = Path | Callable[[], bytes]  # what a page's URL path serves: a file, or a body made


class StaticSite(LoopbackServer):
    """Fixed URL paths, each answered with a file or a made body, on a loopback origin
    of its own. Read at each request and never cached: a rebuild of the package shows
    at the next load."""

    def __init__(self, files: Mapping[str, Source]) -> None:
        self.files = files
        super().__init__()

    def body(self, url_path: str) -> bytes | None:
        source = self.files.get(url_path)
        if isinstance(source, Path):
            return source.read_bytes() if source.is_file() else None
        return source() if source else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url_path = self.path.split("?", 1)[0]
                body = site.body(url_path)
                if body is None:
                    self.send_error(404)
                    return
                kind = ("text/javascript" if url_path.endswith((".js", ".mjs"))
                        else mimetypes.guess_type(url_path)[0] or "application/octet-stream")
                self.send_response(200)
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler


# -- a React app's page, for Chromium ---------------------------------------------------

# React's CommonJS development builds (StrictMode double-mounts only in development);
# the page's loader resolves require() between them, so their order does not matter.
REACT_CJS = ("react/index.js", "react/cjs/react.development.js",
             "react-dom/index.js", "react-dom/cjs/react-dom.development.js",
             "react-dom/client.js", "react-dom/cjs/react-dom-client.development.js",
             "scheduler/index.js", "scheduler/cjs/scheduler.development.js")
CJS_LOADER = """\
// React's CommonJS files from client/node_modules, each in a function, and a
// require() that resolves between them: what a bundler does, for the test page.
(() => {
  const sources = {};
%s
  const cache = {};
  const process = { env: { NODE_ENV: "development" } };
  const dirname = (path) => path.split("/").slice(0, -1).join("/");
  function resolve(from, name) {
    if (!name.startsWith(".")) return name.includes("/") ? `${name}.js` : `${name}/index.js`;
    const parts = dirname(from).split("/");
    for (const part of name.split("/")) {
      if (part === "..") parts.pop();
      else if (part !== ".") parts.push(part);
    }
    return parts.join("/");
  }
  function load(path) {
    if (!(path in sources)) throw new Error(`react-cjs: ${path} is not bundled`);
    if (!cache[path]) {
      const module = { exports: {} };
      cache[path] = module;
      sources[path](module, module.exports, (name) => load(resolve(path, name)), process);
    }
    return cache[path].exports;
  }
  globalThis.cjsRequire = (name) => load(resolve("", name));
})();
"""


def react_cjs_bundle() -> bytes:
    """The loader with React's files in it, as /vendor/react-cjs.js."""
    parts = [f"  sources[{json.dumps(name)}] = function (module, exports, require, process) {{\n"
             f"{(MODULES / name).read_text()}\n}};" for name in REACT_CJS]
    return (CJS_LOADER % "\n".join(parts)).encode()


REACT_PAGE_FILES: dict[str, Source] = {
    "/preferences.html": TEST_PAGES / "browser" / "preferences.html",
    "/preferences-page.mjs": TEST_PAGES / "browser" / "preferences-page.mjs",
    "/preferences-scenario.mjs": TEST_PAGES / "preferences-scenario.mjs",
    "/support.mjs": TEST_PAGES / "support.mjs",  # the scenario imports it
    "/shim/react.mjs": TEST_PAGES / "browser" / "react.mjs",
    "/shim/react-dom-client.mjs": TEST_PAGES / "browser" / "react-dom-client.mjs",
    "/client/index.js": DIST / "index.js",
    "/client/react.js": DIST / "react.js",
    "/client/inbox.js": DIST / "inbox.js",  # react.js imports it
    "/vendor/socket.io.min.js": MODULES / "socket.io-client" / "dist" / "socket.io.min.js",
    "/vendor/react-cjs.js": react_cjs_bundle,
}


class ReactPage(StaticSite):
    """The React test page (client/test/browser/) on a loopback origin of its own."""

    def __init__(self) -> None:
        super().__init__(REACT_PAGE_FILES)
        self.url = f"{self.origin}/preferences.html"
