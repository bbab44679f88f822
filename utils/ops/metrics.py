"""Prometheus metrics: the metric objects, the cheap helpers the hot paths call, and
the exposition that GET /metrics serves.

Several processes. The usual deployment is one gunicorn eventlet worker per process
and several processes or replicas. Each process counts on its own and exposes its
own series, every sample labelled ``process="<hostname>:<pid>"``: the label keeps
the processes' series apart when their scrapes land in one Prometheus job, and a
restarted process starts a new series rather than a counter that seems to go
backwards. Dashboards add the processes up with ``sum without (process)``.

When PROMETHEUS_MULTIPROC_DIR is set (several workers under one gunicorn master),
prometheus_client keeps every worker's values in files in that directory, and a
scrape answered by any worker adds up all of them; ``process`` is then
``<hostname>:<master pid>``. gunicorn.conf.py marks a dead worker's live gauges
gone, and clears stale files when the master starts.

Hot paths (connect, emit) only bump an unlabelled or pre-bound counter. The
sockets gauge is computed from the server's own socket table when it is scraped,
so an upgrade from polling to WebSocket needs no bookkeeping.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import g, has_request_context
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
PROCESS_LABEL = "process"
TRANSPORTS = ("polling", "websocket")
REFUSAL_CODES = ("token_missing", "token_invalid", "token_expired", "server_unavailable",
                 "server_busy")
QUEUE_OPERATIONS = ("publish", "subscribe", "emit")
DATABASE_SOURCES = ("http", "socket")
PUSH_OUTCOMES = ("sent", "removed", "retried", "failed", "expired", "suppressed")
SUBSCRIPTION_REMOVALS = ("gone", "replaced", "unsubscribed")
# Seconds from a producer's request reaching the server to its emit returning: a
# store and a commit, then a local emit or a Redis publish.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
# How often each worker refreshes its sockets gauge in multiprocess mode, where a
# scrape answered by one worker cannot look at another worker's sockets.
GAUGE_REFRESH_SECONDS = 2.0

# The *_created series double the output and no dashboard here reads them.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)

SOCKETS = Gauge(
    "notifier_sockets_connected", "Sockets connected to namespace / now, by transport.",
    ["transport"], registry=REGISTRY, multiprocess_mode="livesum")
CONNECTS = Counter(
    "notifier_socket_connects", "Socket.IO connections accepted.", registry=REGISTRY)
REFUSALS = Counter(
    "notifier_socket_refusals", "Socket.IO connections refused, by the CONNECT_ERROR code.",
    ["code"], registry=REGISTRY)
STORED = Counter(
    "notifier_notifications_stored", "Notifications committed to the database.",
    registry=REGISTRY)
WRITE_GROUPS = Counter(
    "notifier_notification_write_groups", "Transactions that stored notifications: one "
    "per group of producer requests committed together (stored / groups is the mean "
    "rows per commit).", registry=REGISTRY)
EMITTED = Counter(
    "notifier_notifications_emitted",
    "Notifications emitted to their user's room (one per notification, however many "
    "sockets the user has).", registry=REGISTRY)
REPLAYED = Counter(
    "notifier_notifications_replayed",
    "Stored notifications replayed to a socket that connected with last_id.",
    registry=REGISTRY)
EMIT_LATENCY = Histogram(
    "notifier_emit_latency_seconds",
    "From a producer's request (or notify call) arriving to the notification's emit "
    "returning.", buckets=LATENCY_BUCKETS, registry=REGISTRY)
QUEUE_ERRORS = Counter(
    "notifier_message_queue_errors",
    "Message-queue failures: a Redis publish given up (operation=publish), the "
    "subscriber losing Redis or failing to resubscribe (operation=subscribe), an emit "
    "that raised (operation=emit).", ["operation"], registry=REGISTRY)
DATABASE_ERRORS = Counter(
    "notifier_database_errors",
    "Database errors answered as database_unavailable, by where they surfaced.",
    ["source"], registry=REGISTRY)
DELIVERED = Counter(
    "notifier_notifications_delivered",
    "Notifications marked delivered by a client's receipt (each once, however many "
    "devices acknowledge it).", registry=REGISTRY)
RECEIPT_GROUPS = Counter(
    "notifier_receipt_write_groups", "Transactions that recorded receipts: concurrent "
    "receipts share one.", registry=REGISTRY)
REDELIVERED = Counter(
    "notifier_notifications_redelivered",
    "Notifications emitted again because no receipt came within PUSH_AFTER.",
    registry=REGISTRY)
DISPATCH_WRITES = Counter(
    "notifier_push_dispatch_transactions",
    "Transactions the push dispatcher committed (delivery checks, claims, outcomes).",
    registry=REGISTRY)
PUSHES = Counter(
    "notifier_pushes", "Web Push sends by outcome: sent (201), removed (404/410: the "
    "subscription is deleted), retried (429, 5xx, network), failed (any other answer: "
    "given up), expired (still failing when its TTL ran out), suppressed (delivered "
    "before it was sent).", ["outcome"], registry=REGISTRY)
SUBSCRIPTIONS_REMOVED = Counter(
    "notifier_push_subscriptions_removed", "Push subscriptions deleted, by reason: gone "
    "(the push service answered 404/410), replaced (over the per-user limit), "
    "unsubscribed (the user).", ["reason"], registry=REGISTRY)
PUSH_LAG = Histogram(
    "notifier_push_dispatch_lag_seconds",
    "From a push falling due to the push service's answer.",
    buckets=LATENCY_BUCKETS, registry=REGISTRY)
OUTBOX_LAG = Gauge(
    "notifier_outbox_lag_seconds",
    "Age of the oldest row waiting in notification_outbox, as this process's consumer "
    "last saw it (0 when empty).", registry=REGISTRY, multiprocess_mode="livemax")
OUTBOX_CONSUMED = Counter(
    "notifier_outbox_rows_consumed",
    "Outbox rows stored as notifications (and deleted from the outbox).", registry=REGISTRY)
OUTBOX_DEAD = Counter(
    "notifier_outbox_rows_dead_lettered",
    "Outbox rows moved to notification_outbox_dead: their payload failed validation "
    "(or could not be stored).", registry=REGISTRY)

# Pre-bound children: the hot paths skip the label lookup, and every series exists
# at 0 from the start, so rate() and alerts see the first event.
_REFUSALS = {code: REFUSALS.labels(code=code) for code in REFUSAL_CODES}
_QUEUE_ERRORS = {op: QUEUE_ERRORS.labels(operation=op) for op in QUEUE_OPERATIONS}
_DATABASE_ERRORS = {src: DATABASE_ERRORS.labels(source=src) for src in DATABASE_SOURCES}
_PUSHES = {outcome: PUSHES.labels(outcome=outcome) for outcome in PUSH_OUTCOMES}
_REMOVED = {reason: SUBSCRIPTIONS_REMOVED.labels(reason=reason)
            for reason in SUBSCRIPTION_REMOVALS}
_SOCKETS = {transport: SOCKETS.labels(transport=transport) for transport in TRANSPORTS}

if not MULTIPROCESS:
    # CPU, memory and open file descriptors of this process: every socket is a descriptor.
    ProcessCollector(registry=REGISTRY)

_refresher_lock = threading.Lock()
_refresher_started = False


# -- helpers the application calls ---------------------------------------------------

def mark_request_start() -> None:
    """Stamp the arrival of an HTTP request: the start of producer-to-emit latency."""
    g.metrics_started = time.perf_counter()


def producer_started() -> float:
    """When the producer's request arrived, or now outside a request (the CLI)."""
    if has_request_context():
        started = g.get("metrics_started")
        if started is not None:
            return started
    return time.perf_counter()


def connected(socketio: Any = None) -> None:
    """A socket was accepted. In multiprocess mode it also makes sure this worker
    refreshes its sockets gauge in the background, on ``socketio``'s server (the
    caller's Flask-SocketIO object: metrics imports nothing of the app)."""
    CONNECTS.inc()
    if MULTIPROCESS and not _refresher_started and socketio is not None:
        _start_refresher(socketio)


def refused(exc: BaseException) -> None:
    """A connect was refused with ``exc`` (a ConnectionRefusedError)."""
    _refusal_counter(refusal_code(exc)).inc()


def connect_failed(exc: BaseException) -> None:
    """A connect handler failed unexpectedly and was refused as server_unavailable."""
    _refusal_counter("server_unavailable").inc()
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError):
        database_error("socket")


def refusal_code(exc: BaseException) -> str:
    data = (getattr(exc, "error_args", None) or {}).get("data")
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, str) else "unknown"


def _refusal_counter(code: str):
    counter = _REFUSALS.get(code)
    if counter is None:
        # Codes come from this server's own refusals (rate limits, caps), never from
        # a client, so the label set stays small.
        counter = _REFUSALS.setdefault(code, REFUSALS.labels(code=code[:64]))
    return counter


def stored(count: int) -> None:
    """One group commit stored ``count`` notifications."""
    if count:
        STORED.inc(count)
        WRITE_GROUPS.inc()


def delivered(count: int) -> None:
    """One transaction recorded receipts that marked ``count`` notifications."""
    RECEIPT_GROUPS.inc()
    if count:
        DELIVERED.inc(count)


def redelivered(count: int) -> None:
    if count:
        REDELIVERED.inc(count)


def dispatch_write() -> None:
    DISPATCH_WRITES.inc()


def pushed(outcome: str, lag: float | None = None) -> None:
    _PUSHES[outcome].inc()
    if lag is not None:
        PUSH_LAG.observe(max(lag, 0.0))


def subscriptions_removed(reason: str, count: int = 1) -> None:
    if count:
        _REMOVED[reason].inc(count)


def outbox_consumed(count: int) -> None:
    if count:
        OUTBOX_CONSUMED.inc(count)


def outbox_dead_lettered(count: int) -> None:
    if count:
        OUTBOX_DEAD.inc(count)


def outbox_lag(seconds: float) -> None:
    OUTBOX_LAG.set(max(seconds, 0.0))


def emitted(started: float | None) -> None:
    """An emit to a user's room returned; ``started`` is from producer_started()."""
    EMITTED.inc()
    if started is not None:
        EMIT_LATENCY.observe(time.perf_counter() - started)


def replayed(count: int) -> None:
    if count:
        REPLAYED.inc(count)


def queue_error(operation: str) -> None:
    _QUEUE_ERRORS[operation].inc()


def database_error(source: str) -> None:
    _DATABASE_ERRORS[source].inc()


# -- the sockets gauge -----------------------------------------------------------------

def count_sockets(server: Any, namespace: str = "/") -> dict[str, int]:
    """Sockets connected to ``namespace`` by their current Engine.IO transport."""
    counts = dict.fromkeys(TRANSPORTS, 0)
    if server is None:
        return counts
    members = server.manager.rooms.get(namespace, {}).get(None, {})
    eio_sockets = server.eio.sockets
    for eio_sid in list(members.values()):
        eio_socket = eio_sockets.get(eio_sid)
        if eio_socket is None or eio_socket.closed:
            continue
        # A WebSocket-only connection is flagged upgraded from its start.
        counts["websocket" if eio_socket.upgraded else "polling"] += 1
    return counts


def refresh_sockets(server: Any) -> None:
    for transport, value in count_sockets(server).items():
        _SOCKETS[transport].set(value)


def _start_refresher(socketio: Any) -> None:
    global _refresher_started
    with _refresher_lock:
        if _refresher_started:
            return
        _refresher_started = True

    def loop() -> None:
        while True:
            try:
                refresh_sockets(socketio.server)
            except Exception:  # a bad moment must not end the loop for good
                pass
            socketio.sleep(GAUGE_REFRESH_SECONDS)

    socketio.start_background_task(loop)


# -- exposition --------------------------------------------------------------------------

def process_label() -> str:
    """``<hostname>:<pid>``; the gunicorn master's pid in multiprocess mode, where the
    answer covers all of its workers."""
    pid = os.getppid() if MULTIPROCESS else os.getpid()
    return f"{socket.gethostname()}:{pid}"


class _Labelled:
    """A collector that adds constant labels to every sample of another one."""

    def __init__(self, source: Any, labels: dict[str, str]) -> None:
        self.source, self.labels = source, labels

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = [s._replace(labels={**s.labels, **self.labels})
                            for s in family.samples]
            yield copy


def _source() -> Any:
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return merged


def exposition(server: Any) -> tuple[bytes, str]:
    """The text format body and its content type, for this process (or, in
    multiprocess mode, for every worker of this gunicorn master)."""
    refresh_sockets(server)
    body = generate_latest(_Labelled(_source(), {PROCESS_LABEL: process_label()}))
    return body, CONTENT_TYPE_LATEST

