"""eventlet 0.41.3: its WebSocket reader, bounded and with fast unmasking, and a
connection another handler took over. eventlet is imported inside each function
(absolute imports: this module's name shadows nothing), never under gevent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_eventlet_patched = False



# eventlet keeps each received chunk of a message in a list; a message this many
# chunks long is refused whatever its size (zero-length fragments cost memory too).
MAX_MESSAGE_CHUNKS = 1024


def patch_eventlet_websocket() -> None:
    """Two changes to eventlet's RFC 6455 reader, once per process.

    - Upstream ``RFC6455WebSocket._recv_frame`` checks each frame against
      ``max_frame_length`` but lets a fragmented message grow without bound. Here a
      message whose chunks together pass the limit fails with close code 1009.
    - Upstream ``_apply_mask`` unmasks one byte at a time in a generator, about
      20 ms of one core per 64 KB, without yielding. Here it is one XOR of two
      integers, which gives the same bytes."""
    global _eventlet_patched
    if _eventlet_patched:
        return
    from eventlet import websocket

    reader = websocket.RFC6455WebSocket
    recv_frame = reader._recv_frame

    def bounded_recv_frame(self: Any, message: Any = None) -> Any:
        received = recv_frame(self, message=message)
        if not received.opcode & 8:  # data frames; control frames stand alone
            chunks = received.data
            if len(chunks) > MAX_MESSAGE_CHUNKS or \
                    sum(map(len, chunks)) > self.max_frame_length:
                raise websocket.FailedConnectionError(1009, "Message is too big")
        return received

    reader._recv_frame = bounded_recv_frame
    reader._apply_mask = staticmethod(unmask)
    _log_shutdown_errors_as_lines(websocket.WebSocket)
    _eventlet_patched = True


def _log_shutdown_errors_as_lines(socket_class: Any) -> None:
    """Upstream ``WebSocket.__init__`` keeps ``environ["wsgi.errors"]`` as ``self.log``,
    and ``close()`` writes "socket shutdown error: [Errno 9] ..." there without a
    newline: under gunicorn that text was glued to the next log line. A socket the
    peer already closed is not an error. Here ``self.log`` is a writer that hands each
    write to Python logging as one DEBUG line of this module's logger."""
    init = socket_class.__init__

    def init_with_line_log(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.log = _DebugLines()

    socket_class.__init__ = init_with_line_log


class _DebugLines:
    """A file-like ``write`` that logs each call as one DEBUG line."""

    def write(self, text: str) -> None:
        import logging

        logging.getLogger(__name__).debug("eventlet websocket: %s", text.strip())

    def flush(self) -> None:
        pass


def unmask(data: bytes, mask: Any, length: int | None = None, offset: int = 0) -> bytes:
    """RFC 6455 §5.3: XOR ``data[:length]`` with the 4-byte ``mask``, starting at
    byte ``offset`` of the mask's cycle."""
    if length is None:
        length = len(data)
    if not length:
        return b""
    key = bytes(mask[(offset + i) % 4] for i in range(4))
    stream = (key * (length // 4 + 1))[:length]
    mixed = int.from_bytes(data[:length], "little") ^ int.from_bytes(stream, "little")
    return mixed.to_bytes(length, "little")


def end_taken_over_connection(environ: dict[str, Any]) -> Iterable[bytes] | None:
    """Tell the server a connection was taken over and must just be closed.

    gunicorn's async workers (eventlet and gevent) close on StopIteration, the signal
    simple-websocket itself uses. eventlet's own server (``python app.py``) reads
    the private flag ``eventlet.wsgi.WSGI_LOCAL.already_handled``. None elsewhere."""
    if "gunicorn.socket" in environ:
        raise StopIteration()
    if "eventlet.input" in environ:
        from eventlet import wsgi

        wsgi.WSGI_LOCAL.already_handled = True
        return []
    return None
