"""Real PostgreSQL and Redis for the tests: used when they answer, skipped with a
reason when they do not, and a failure under CI=true where they must exist."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The machine's shared Redis; tests that stop Redis start a private one instead.
SHARED_REDIS = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if port_open(host, port):
        return
    message = f"{name} is not answering on {host}:{port}"
    if in_ci():
        pytest.fail(f"{message}; under CI=true it must run (.ci/run starts it)")
    pytest.skip(f"{message}; start it to run this test")


@contextmanager
def new_databases(prefix: str) -> Iterator[Callable[[], str]]:
    """``make()`` creates a new, empty PostgreSQL database and answers its URL; every
    one made is dropped (its connections ended first) when the block ends."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    import pg8000.native

    admin = pg8000.native.Connection("postgres", host=PG_HOST, port=PG_PORT, database="test")
    made: list[str] = []

    def make() -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin.run(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"

    try:
        yield make
    finally:
        for name in made:
            admin.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = :n", n=name)
            admin.run(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
