"""Real browsers over plain W3C WebDriver HTTP: WebKit (WebKitGTK's MiniBrowser under
Xvfb, through WebKitWebDriver) and Chromium (headless, through chromedriver).

Plain HTTP calls with requests, not Selenium: the tests need eight commands, and
this keeps one dependency fewer and every capability visible here.
"""

from __future__ import annotations

import base64
import os
import select
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.processes import start_group, stop_group
from tests.support.servers import free_port

MINIBROWSER = Path("/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser")
CHROMIUM = Path("/usr/bin/chromium")
# No internet here: everything that would phone home is off, and QUIC too.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-first-run",
    "--no-default-browser-check", "--disable-quic", "--window-size=1280,1024",
]


ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element identifier


class WebDriverError(RuntimeError):
    pass


@dataclass(frozen=True)
class Engine:
    name: str
    driver: str  # executable
    browser: Path

    def missing(self) -> str | None:
        """Why this engine cannot run here, or None."""
        if not shutil.which(self.driver):
            return f"{self.driver} is not installed"
        if not self.browser.exists():
            return f"{self.browser} is not installed"
        if self.name == "webkit" and not shutil.which("Xvfb"):
            return "Xvfb is not installed"
        return None


ENGINES = {
    "webkit": Engine("webkit", "WebKitWebDriver", MINIBROWSER),
    "chromium": Engine("chromium", "chromedriver", CHROMIUM),
}


class Process:
    """A helper process we started, in its own session; stopped by its PID only."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        self.log = open(log_path, "ab")
        self.keep_fd: int | None = None
        self.proc = start_group(argv, self.log, env=env, pass_fds=pass_fds)

    def stop(self) -> None:
        # The process group holds the browser the driver launched, and only it.
        stop_group(self.proc)
        self.log.close()
        if self.keep_fd is not None:
            os.close(self.keep_fd)
            self.keep_fd = None


def start_xvfb(log_dir: Path) -> tuple[Process, str]:
    """Xvfb on a display it picks itself (-displayfd), so none in use is taken. The
    pipe stays open while Xvfb lives: it may write the number again, and a closed
    pipe is fatal to it."""
    read_fd, write_fd = os.pipe()
    xvfb = Process(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x2200x24",
                    "-nolisten", "tcp", "-noreset"], log_dir / "xvfb.log",
                   pass_fds=(write_fd,))
    os.close(write_fd)
    xvfb.keep_fd = read_fd
    ready, _, _ = select.select([read_fd], [], [], 15)
    number = os.read(read_fd, 64).decode().strip() if ready else ""
    if not number.isdigit():
        xvfb.stop()
        raise RuntimeError(f"Xvfb did not report a display:\n{(log_dir / 'xvfb.log').read_text()}")
    return xvfb, f":{number}"


class Browser:
    """One WebDriver session, with its driver (and Xvfb for WebKit)."""

    def __init__(self, engine: Engine, log_dir: Path) -> None:
        self.engine = engine
        self.log_dir = log_dir
        self.helpers: list[Process] = []
        self.profile = Path(tempfile.mkdtemp(prefix=f"{engine.name}-profile-", dir=log_dir))
        env = dict(os.environ)
        if engine.name == "webkit":
            xvfb, display = start_xvfb(log_dir)
            self.helpers.append(xvfb)
            env["DISPLAY"] = display
        port = free_port()
        self.driver_url = f"http://127.0.0.1:{port}"
        self.helpers.append(Process([engine.driver, f"--port={port}"],
                                    log_dir / f"{engine.driver}.log", env=env))
        try:
            self._wait_driver()
            created = self._call("POST", "/session", {"capabilities": self._capabilities()})
        except Exception:
            self.quit()
            raise
        self.session = created["sessionId"]
        self.capabilities = created["capabilities"]
        self.version = self.capabilities.get("browserVersion", "?")

    def _capabilities(self) -> dict[str, Any]:
        if self.engine.name == "webkit":
            options = {"binary": str(MINIBROWSER), "args": ["--automation"]}
            return {"alwaysMatch": {"browserName": "MiniBrowser",
                                    "webkitgtk:browserOptions": options}}
        args = [*CHROMIUM_ARGS, f"--user-data-dir={self.profile}"]
        return {"alwaysMatch": {"browserName": "chrome",
                                "goog:chromeOptions": {"binary": str(CHROMIUM), "args": args}}}

    def _wait_driver(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.driver_url + "/status", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"{self.engine.driver} did not start within {timeout}s")

    def _call(self, method: str, path: str, payload: dict | None = None,
              timeout: float = 60) -> Any:
        if method == "POST" and payload is None:
            payload = {}  # WebDriver wants a JSON object on every POST, even an empty one
        response = requests.request(method, self.driver_url + path, json=payload,
                                    timeout=timeout)
        value = response.json().get("value")
        if response.status_code >= 400:
            detail = value.get("message", value) if isinstance(value, dict) else value
            raise WebDriverError(f"{method} {path}: {response.status_code} {detail}")
        return value

    def command(self, method: str, path: str, payload: dict | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", payload)

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run a function body in the page; ``arguments[i]`` are the JSON ``args``."""
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, expression: str, *args: Any, timeout: float = 15,
                 what: str = "") -> Any:
        """Poll a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(f"return ({expression});", *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.engine.name}: timed out after {timeout}s waiting "
                                     f"for {what or expression}")
            time.sleep(0.1)

    def element(self, css: str) -> str:
        found = self.command("POST", "/element", {"using": "css selector", "value": css})
        return found[ELEMENT_KEY]

    def click(self, css: str) -> None:
        """A real click, as a user's tap: the element must be visible and enabled."""
        self.command("POST", f"/element/{self.element(css)}/click")

    def type(self, css: str, text: str) -> None:
        element = self.element(css)
        self.command("POST", f"/element/{element}/clear")
        self.command("POST", f"/element/{element}/value", {"text": text})

    def text(self, css: str) -> str:
        return self.command("GET", f"/element/{self.element(css)}/text")

    def set_window(self, width: int, height: int) -> None:
        self.command("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.command("GET", "/screenshot")))
        return path

    def quit(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}", timeout=20)
        except (requests.RequestException, WebDriverError):
            pass
        finally:
            for helper in reversed(self.helpers):
                helper.stop()
            shutil.rmtree(self.profile, ignore_errors=True)
