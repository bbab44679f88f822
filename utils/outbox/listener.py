"""The consumer's LISTEN connection: a pg8000 connection of its own, outside the pool.

pg8000 is pure Python, so under eventlet or gevent its socket is the hub's and the
wait below (``select`` on that socket) yields to other greenthreads; under threads it
is an ordinary blocking select in the consumer's own thread. pg8000 reads a
notification only while it runs a statement, so once the socket is readable a
``SELECT 1`` takes it in.
"""

from __future__ import annotations

import select
from typing import Any

import sqlalchemy as sa

from utils.outbox.batch import CHANNEL

APPLICATION_NAME = "notifier outbox listener"  # how an operator finds it in pg_stat_activity
SOCKET_TIMEOUT = 30  # seconds a statement on this connection may take


class ListenLost(Exception):
    """The LISTEN connection failed or was closed (say, pg_terminate_backend)."""


class Listener:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._conn: Any = None
        self.backend_pid: int | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self) -> None:
        """Open the connection and LISTEN; raises on failure."""
        dialect = self._engine.dialect
        args, kwargs = dialect.create_connect_args(self._engine.url)
        kwargs.setdefault("application_name", APPLICATION_NAME)
        kwargs.setdefault("timeout", SOCKET_TIMEOUT)
        conn = dialect.loaded_dbapi.connect(*args, **kwargs)
        try:
            conn.autocommit = True  # LISTEN takes effect at once, not at a commit
            cursor = conn.cursor()
            cursor.execute(f"LISTEN {CHANNEL}")
            cursor.execute("SELECT pg_backend_pid()")
            self.backend_pid = int(cursor.fetchone()[0])
        except Exception:
            _close_quietly(conn)
            raise
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification; True when one came.
        Raises ListenLost when the connection is gone (it is closed then)."""
        conn = self._conn
        if conn is None:
            raise ListenLost("not connected")
        try:
            sock = conn._usock  # pg8000's socket: the only way to wait on it
            if sock is None:
                raise ListenLost("closed")
            readable, _, _ = select.select([sock], [], [], timeout)
            # Readable or not, a statement reads what is there: notifications, or
            # the FATAL of a terminated backend. After a quiet timeout it is the
            # health check, and it takes in a notification pg8000 had buffered.
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            notified = bool(conn.notifications)
            conn.notifications.clear()
            return notified or bool(readable)
        except ListenLost:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise ListenLost(type(exc).__name__) from exc

    def close(self) -> None:
        conn, self._conn, self.backend_pid = self._conn, None, None
        if conn is not None:
            _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass
