"""Per-process socket state, and ``init_realtime``, which binds Socket.IO to the app
with everything around it: origins, the client manager and its replay guard, the
admission rules, the socket registry and the expiry sweeper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from flask import Flask

from utils import protocol
from utils.config import Settings
from utils.db.engine import connect_slots
from utils.edge.addresses import client_ip
from utils.edge.origins import OriginPolicy
from utils.extensions import socketio
from utils.ops.logs import socketio_loggers
from utils.patches.eventlet import patch_eventlet_websocket
from utils.patches.python_engineio import bound_websocket_messages
from utils.patches.python_socketio import guard_socketio_server
from utils.realtime.admission import Admission, AdmissionSweeper, Rules
from utils.realtime.connect_gate import ConnectGate
from utils.realtime.pinger import install as install_pinger
from utils.realtime.queue import make_catch_up, make_manager
from utils.realtime.registry import ExpirySweeper, SocketRegistry
from utils.realtime.replay import ReplayGuard
from utils.services import services

CHANNEL = "notifications"


@dataclass
class Realtime:
    registry: SocketRegistry
    guard: ReplayGuard
    sweeper: ExpirySweeper
    gate: ConnectGate
    admission: Admission
    queue_probe: Callable[[], bool] | None = None  # with REDIS_URL: whether Redis answers

    def forget(self, sid: str) -> None:
        self.registry.remove(sid)
        self.guard.forget(sid)


def init_realtime(app: Flask, settings: Settings, origins: OriginPolicy) -> Realtime:
    """Socket.IO on ``app``, with ``origins`` (built once, by create_app) as its allowlist."""
    guard = ReplayGuard()
    sio_logger, eio_logger = socketio_loggers(settings.socketio_logger)
    socketio.init_app(
        app,
        async_mode=settings.async_mode,
        cors_allowed_origins=origins,
        cors_credentials=True,
        transports=list(settings.transports),
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_http_buffer_size=settings.max_http_buffer_size,
        client_manager=make_manager(guard, settings.redis_url, CHANNEL, sio_logger),
        logger=sio_logger,
        engineio_logger=eio_logger,
        cookie=None,
        http_compression=True,
        always_connect=False,
    )
    admission = Admission(
        settings.connect_timeout, settings.max_pending_sessions_per_ip)
    address_of = partial(client_ip, trusted=settings.trusted_proxies,
                         hops=settings.trusted_proxy_hops)
    rules = Rules(admission, address_of)
    sessions = guard_socketio_server(socketio.server, rules)
    rules.sweeper = AdmissionSweeper(
        admission, lambda eio_sid: sessions.end(eio_sid, "no CONNECT in time"),
        sessions.signed_in, socketio.server.start_background_task, socketio.server.sleep)
    bound_websocket_messages(socketio.server.eio)
    if settings.async_mode == "eventlet":
        patch_eventlet_websocket()
    install_pinger(socketio.start_background_task, socketio.sleep)

    registry = SocketRegistry()

    def end_expired(sid: str) -> None:
        socketio.emit(protocol.TOKEN_EXPIRED, {"code": "token_expired"}, to=sid)
        socketio.server.disconnect(sid, namespace="/")

    sweeper = ExpirySweeper(registry, settings.token_sweep_interval, end_expired,
                            socketio.start_background_task, socketio.sleep)
    # A connect waits for a database slot at most half its CONNECT deadline, so a
    # refusal reaches the client before the admission sweeper would close it.
    gate = ConnectGate(connect_slots(settings.database_url),
                       wait=min(5.0, settings.connect_timeout / 2))
    realtime = Realtime(registry, guard, sweeper, gate, admission)
    manager = socketio.server.manager
    if hasattr(manager, "on_resubscribed"):
        manager.on_resubscribed = make_catch_up(app, registry, socketio.server,
                                                lambda: services(app).drain,
                                                settings.redis_catch_up_limit)
    if settings.redis_url:
        from utils.realtime.queue import redis_probe

        realtime.queue_probe = redis_probe(settings.redis_url)
    return realtime
