"""Issue 24, finding 9: eventlet's "socket shutdown error" used to be written to
gunicorn's error stream without a newline, glued to the next log line. With the patch
it is one DEBUG line of Python logging, and nothing reaches wsgi.errors."""

from __future__ import annotations

import errno
import io
import logging

import pytest

eventlet_websocket = pytest.importorskip("eventlet.websocket")


class GoneSocket:
    """A socket whose peer has gone: shutdown fails with EBADF, as under gunicorn."""

    def sendall(self, data: bytes) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    def shutdown(self, how: int) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    def close(self) -> None:
        pass


def test_a_shutdown_error_is_one_debug_line_not_raw_text_on_the_error_stream(caplog):
    from utils.patches.eventlet import patch_eventlet_websocket

    patch_eventlet_websocket()
    errors = io.StringIO()
    environ = {"wsgi.errors": errors, "SERVER_NAME": "h", "SERVER_PORT": "1",
               "PATH_INFO": "/socket.io/", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "2"}
    socket = eventlet_websocket.RFC6455WebSocket(GoneSocket(), environ, 13)
    with caplog.at_level(logging.DEBUG, logger="utils.patches.eventlet"):
        socket.close()
    assert errors.getvalue() == ""
    lines = [r for r in caplog.records if r.name == "utils.patches.eventlet"]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert "socket shutdown error" in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
