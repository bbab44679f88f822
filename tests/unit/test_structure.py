"""How the app is put together: the library versions its patches were written for,
the one WSGI stack, and the same system under every server (utils/patches/,
utils/edge/stack.py, entrypoints/runtime.py)."""

from __future__ import annotations

import sys

import engineio.socket
import pytest

from tests.support.servers import VENV_BIN, refusal, run_command, server_env
from utils.edge.stack import layer_names
from utils.patches import PATCHED_FOR, PatchedVersionError, check_versions
from utils.services import services


def test_the_installed_libraries_are_the_ones_the_patches_were_written_for():
    check_versions()  # what create_app runs first


@pytest.mark.parametrize("package", sorted(PATCHED_FOR))
def test_another_version_refuses_to_start_naming_the_package(package):
    def installed(name: str) -> str:
        return "99.0.0" if name == package else PATCHED_FOR[name]

    with pytest.raises(PatchedVersionError) as excinfo:
        check_versions(installed)
    message = str(excinfo.value)
    assert f"{package} 99.0.0 (patched for {PATCHED_FOR[package]})" in message
    assert all(other not in message for other in PATCHED_FOR if other != package)


def test_a_server_with_other_versions_exits_with_one_line(tmp_path):
    code = ("import importlib.metadata as m; real = m.version; "
            "m.version = lambda n: '0.1' if n == 'eventlet' else real(n); "
            "import app")
    assert refusal([sys.executable, "-c", code], server_env(tmp_path)) == [
        "cannot start: utils/patches/ was written for other library versions: eventlet 0.1 "
        "(patched for 0.41.3); install requirements.txt, or review each patch against the "
        "new version"]


def test_one_wsgi_stack_outermost_first(app):
    assert layer_names(app.wsgi_app) == ["SecurityHeaders", "EngineIOGuard", "DrainLayer",
                                         "NoWebSocketCompression", "_SocketIOMiddleware"]


def _engineio_app(wsgi):
    while hasattr(wsgi, "app"):  # as layer_names walks the stack
        wsgi = wsgi.app
    return wsgi.engineio_app


def test_every_app_gets_its_own_handlers(tmp_path):
    """create_app binds routes/events.py's Events methods on each app's server: the
    second app (every test builds several) handles every event too, with its own
    instance."""
    from routes.events import Events
    from tests.support.app import build_app

    first = build_app(tmp_path / "first")
    second = build_app(tmp_path / "second")
    expected = {name.removeprefix("on_") for name in dir(Events) if name.startswith("on_")}
    tables = [_engineio_app(a.wsgi_app).handlers.get("/", {}) for a in (first, second)]
    for table in tables:
        assert expected | {"*"} == set(table)
    owners = [table["delivered"].__self__ for table in tables]  # the raw handler's Events
    assert all(isinstance(owner, Events) for owner in owners)
    assert owners[0] is not owners[1]


def test_every_app_routes_pings_through_the_one_task(app):
    assert engineio.socket.Socket.schedule_ping.__module__ == "utils.patches.python_engineio"


def test_cli_commands_print_no_eventlet_banner(tmp_path):
    env = server_env(tmp_path, APP_ENV="development", ASYNC_MODE="eventlet")
    env.pop("PYTHONWARNINGS")
    out = run_command([str(VENV_BIN / "flask"), "--app", "app", "create-token", "ann"], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(".") == 2  # the JWT
    assert "eventlet" not in out.stderr.lower()


def test_a_draining_process_refuses_new_sessions_only(app, client):
    """After SIGTERM a proxy may still reuse connections to this node; a reconnecting
    client must not open a session here (its long-poll would hold the worker)."""
    handshake = "/socket.io/?EIO=4&transport=polling"
    assert client.get(handshake).status_code == 200
    services(app).drain.draining = True
    refused = client.get(handshake)
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "draining"
    assert refused.headers["Retry-After"] == "1"
    assert client.get(handshake + "&sid=unknown").status_code == 400  # Engine.IO's own
    assert client.get("/healthz").status_code == 200
