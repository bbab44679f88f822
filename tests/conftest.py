"""Shared fixtures: an app per test, its HTTP and Socket.IO test clients, tokens."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PYTHONWARNINGS", "ignore")

from tests.support.app import API_KEY, ORIGIN, SECRET, build_app  # noqa: F401 (fixtures)
from tests.support.services import new_databases


@pytest.fixture
def app(tmp_path):
    return build_app(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make_token(app):
    """``make_token("alice", ttl=60, **claims)``: a token the app accepts."""
    from utils.auth.tokens import create_access_token

    def _make(user_id: str = "alice", ttl: int = 3600, **claims) -> str:
        with app.app_context():
            return create_access_token(user_id, ttl, **claims)

    return _make


@pytest.fixture
def make_token_for():
    """``make_token_for(app, "alice")``: a token for a given app (e.g. ``store_app``)."""
    from utils.auth.tokens import create_access_token

    def _make(app, user_id: str, ttl: int = 3600) -> str:
        with app.app_context():
            return create_access_token(user_id, ttl)

    return _make


@pytest.fixture
def api_headers():
    return {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


@pytest.fixture
def notify(client, api_headers):
    """``notify("alice", title="x")``: POST /api/notifications; returns the ids."""

    def _notify(*user_ids: str, **fields) -> list[int]:
        body = {"type": "test", "title": "hello", **fields}
        if len(user_ids) == 1:
            body["user_id"] = user_ids[0]
        else:
            body["user_ids"] = list(user_ids)
        response = client.post("/api/notifications", json=body, headers=api_headers)
        assert response.status_code == 201, response.get_json()
        return [n["id"] for n in response.get_json()["notifications"]]

    return _notify


@pytest.fixture
def sio_client(app):
    """``sio_client(auth=..., headers=..., query_string=...)``: Flask-SocketIO's test
    client; every client made is disconnected at teardown."""
    from utils.extensions import socketio

    made = []

    def _make(**kwargs):
        kwargs.setdefault("headers", {"Origin": ORIGIN})
        test_client = socketio.test_client(app, **kwargs)
        made.append(test_client)
        return test_client

    yield _make
    for test_client in made:
        if test_client.is_connected():
            test_client.disconnect()


@pytest.fixture
def clients():
    """``clients(origin=...)``: real python-socketio clients (tests/support/clients.py),
    each disconnected at teardown."""
    from tests.support.clients import Recorder

    made = []

    def _make(**kwargs):
        made.append(Recorder(**kwargs))
        return made[-1]

    yield _make
    for recorder in made:
        recorder.disconnect()


@pytest.fixture(params=["eventlet", "gevent"])
def worker(request) -> str:
    """gunicorn's eventlet worker (the Procfile's) and gevent, the maintained path: a
    real-server test that takes this runs on both."""
    return request.param


@pytest.fixture
def made():
    """Cluster recorders (tests/support/cluster.py) a test creates, closed at teardown."""
    recorders = []
    yield recorders
    for recorder in recorders:
        recorder.close()


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL database for this run, dropped at the end."""
    with new_databases("notif_test") as make:
        yield make()


@pytest.fixture
def fresh_database():
    """``fresh_database()``: the URL of a new, empty PostgreSQL database, dropped at
    teardown (an outbox in a producer's own database; a server's database that a test
    migrates itself)."""
    with new_databases("fresh") as make:
        yield make


@pytest.fixture(params=["sqlite", "postgresql"])
def store_app(request, tmp_path):
    """The app on SQLite, then on PostgreSQL: store tests run against both."""
    if request.param == "sqlite":
        return build_app(tmp_path)
    app = build_app(tmp_path, DATABASE_URL=request.getfixturevalue("postgres_url"))
    _truncate(app)
    return app


def _truncate(app):
    """Tests run one at a time, so each PostgreSQL test starts from empty tables."""
    import sqlalchemy as sa

    from utils.extensions import db

    with app.app_context():
        db.session.execute(sa.text(
            "TRUNCATE notifications, idempotency_keys, watermarks RESTART IDENTITY"))
        db.session.commit()
