"""Whether the process runs on the cooperative library that ASYNC_MODE names.

gunicorn's eventlet and gevent workers monkey-patch the process before they load the
app; the app then builds Socket.IO for ASYNC_MODE. ``gunicorn -k gevent`` with
ASYNC_MODE left at eventlet started, answered /healthz, and failed in background
work (a push never arrived, issue 20): the app must refuse to start instead.
"""

from __future__ import annotations

import sys

from utils.config.values import ConfigError


def running_on() -> str | None:
    """The library that patched this process's socket module: eventlet, gevent or
    None (a CLI command, a test, a threaded server)."""
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            return "gevent"
    if "eventlet" in sys.modules:
        from eventlet import patcher

        if patcher.is_monkey_patched("socket"):
            return "eventlet"
    return None


def check_worker(async_mode: str) -> None:
    """Raise ConfigError when the process is patched by another library than
    ``async_mode`` names."""
    running = running_on()
    if running is not None and running != async_mode:
        raise ConfigError(
            f"ASYNC_MODE is {async_mode} but this process runs on {running} "
            f"(gunicorn --worker-class {running}): set ASYNC_MODE={running}, or run "
            f"the worker class ASYNC_MODE names")
