"""Fixtures for the real-browser tests: one browser session per engine for the whole
run, the stand-in front end on its own loopback origins, and a production gunicorn
server, on the eventlet worker and on gevent, that allows exactly that origin.

The pages load the client package's build (client/dist, and its copies in static/
for /debug). Under CI=true a missing browser, driver, Xvfb, socket.io-client or
client build is a failure; elsewhere those tests skip with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser.helpers import CLIENT_DIST, REPORT, NotifyServer, PageServer, open_page
from tests.support.browser.webdriver import ENGINES, Browser
from tests.support.client_package import missing_build
from tests.support.services import in_ci


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason}; under CI=true the browser tests must run (scripts/test.sh "
                    "installs the packages)")
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("browser transports")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def pages() -> Iterator[tuple[PageServer, PageServer]]:
    """(allowed, foreign): the front end's origin, and one the server does not list."""
    if not (CLIENT_DIST / "socket.io.min.js").is_file():
        unavailable("socket.io-client is not in node_modules (run npm ci)")
    if reason := missing_build():
        unavailable(reason)
    allowed, foreign = PageServer(), PageServer()
    yield allowed, foreign
    allowed.close()
    foreign.close()


@pytest.fixture(scope="session")
def page_origin(pages) -> str:
    return pages[0].origin


@pytest.fixture(scope="session")
def foreign_origin(pages) -> str:
    return pages[1].origin


@pytest.fixture(scope="session", params=sorted(ENGINES))
def browser(request, tmp_path_factory) -> Iterator[Browser]:
    """One WebDriver session per engine, shared by every browser test."""
    engine = ENGINES[request.param]
    missing = engine.missing()
    if missing:
        unavailable(f"{engine.name}: {missing}")
    started = time.monotonic()
    instance = Browser(engine, tmp_path_factory.mktemp(f"{engine.name}-driver"))
    REPORT.append(f"{engine.name}: browser {instance.version}, session started in "
                  f"{time.monotonic() - started:.1f}s")
    yield instance
    instance.quit()


@pytest.fixture
def page(browser, page_origin) -> Iterator[Browser]:
    """The stand-in front end, freshly loaded; its sockets closed afterwards."""
    open_page(browser, page_origin)
    yield browser
    try:
        browser.run("if (window.harness) window.harness.close();")
    except Exception:
        pass  # the page may be gone already; the next test loads a fresh one


@pytest.fixture(scope="module", params=["eventlet", "gevent"])
def server(request, tmp_path_factory, page_origin) -> Iterator[NotifyServer]:
    """The production server on each gunicorn worker the project supports."""
    instance = NotifyServer(tmp_path_factory.mktemp(f"browser-server-{request.param}"),
                            page_origin, worker=request.param)
    yield instance
    instance.stop()
