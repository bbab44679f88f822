"""The one place the WSGI stack is assembled, outermost layer first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from utils.config import Settings
from utils.edge.addresses import client_ip
from utils.edge.compression import NoWebSocketCompression
from utils.edge.eio_guard import EngineIOGuard
from utils.edge.headers import SecurityHeaders, script_origin
from utils.edge.limits import SocketLimits
from utils.extensions import socketio
from utils.patches.python_socketio import close_session

WSGI = Callable[[dict[str, Any], Callable], Any]
DrainLike = TypeVar("DrainLike", bound=WSGI)


def wsgi_stack(inner: WSGI, settings: Settings, *, has_room: Callable[[str], bool],
               socket_limits: SocketLimits,
               drain_layer: Callable[[WSGI], DrainLike]) -> tuple[WSGI, DrainLike]:
    """Every layer in front of Flask, outermost first, each with why it sits there.
    ``inner`` is what ``socketio.init_app`` left in ``app.wsgi_app``: Flask-SocketIO's
    middleware, which hands /socket.io/ to Engine.IO and everything else to Flask.
    Realtime's parts come in as arguments (``has_room``: admission's room for a new
    session from an address; ``drain_layer``: utils/realtime/drain.py's DrainLayer).
    Returns the stack and its drain layer."""
    tracker: list[DrainLike] = []

    def track(inner: WSGI) -> WSGI:
        tracker.append(drain_layer(inner))
        return tracker[0]

    def address_of(environ: dict[str, Any]) -> str:
        return client_ip(environ, settings.trusted_proxies, settings.trusted_proxy_hops)

    def allow_handshake(environ: dict[str, Any]) -> bool:
        return has_room(address_of(environ)) and \
            socket_limits.allow_handshake(environ)

    def known_session(sid: str) -> bool:
        """Whether this process's Engine.IO holds an open session ``sid``."""
        session = socketio.server.eio.sockets.get(sid)
        return session is not None and not session.closed

    def end_session(sid: str) -> None:
        close_session(socketio.server, sid)

    layers: list[tuple[str, Callable[[WSGI], WSGI]]] = [
        # Outermost, so the headers go on every response: Flask's, Engine.IO's (which
        # never pass through after_request) and the guard's own refusals.
        ("security headers", lambda inner: SecurityHeaders(
            inner, settings.is_production, script_origin(settings.socketio_client_url))),
        # Refuses what python-engineio mishandles, answers sids it does not hold,
        # caps new sessions per address and throttles each connection's reads, before
        # Engine.IO parses a byte.
        ("Engine.IO guard", lambda inner: EngineIOGuard(
            inner, settings.max_http_buffer_size, known_session=known_session,
            end_session=end_session, allow_handshake=allow_handshake, address_of=address_of,
            read_rate=settings.socket_read_rate,
            unknown_per_minute=settings.unknown_session_rate_per_ip, sleep=socketio.sleep)),
        # Notes each WebSocket's raw connection so a SIGTERM drain can shut it down,
        # and refuses new sessions once draining (utils/realtime/drain.py); inside the
        # guard, so connections it refused never count.
        ("drain", track),
        # Removes the permessage-deflate offer, so Engine.IO never negotiates it.
        ("no WebSocket compression", NoWebSocketCompression),
    ]
    wsgi: WSGI = inner
    for _name, wrap in reversed(layers):
        wsgi = wrap(wsgi)
    return wsgi, tracker[0]


def layer_names(wsgi: Any) -> list[str]:
    """The class of each layer, outermost first, down to Flask-SocketIO's middleware."""
    names = [type(wsgi).__name__]
    while hasattr(wsgi, "app"):
        wsgi = wsgi.app
        names.append(type(wsgi).__name__)
    return names
