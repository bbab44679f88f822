"""Operations: GET /metrics in the Prometheus text format."""

from __future__ import annotations

from flask import Blueprint, Response

from utils.auth.credentials import require_bearer_secret
from utils.errors import ApiError
from utils.extensions import socketio
from utils.ops import metrics
from utils.services import services

bp = Blueprint("metrics", __name__)


@bp.before_app_request
def _stamp_arrival() -> None:
    # The start of the producer-to-emit latency: one clock read per HTTP request.
    metrics.mark_request_start()


def _authorize(settings) -> None:
    """``Authorization: Bearer <METRICS_TOKEN>`` when the token is set; without one,
    closed (403) unless METRICS_PUBLIC, which is the default only in development."""
    if settings.metrics_token:
        require_bearer_secret(settings.metrics_token, "metrics", "metrics_token",
                              "METRICS_TOKEN")
    elif settings.metrics_closed:
        raise ApiError(403, "metrics_closed", "/metrics is closed: set METRICS_TOKEN on the "
                       "server and scrape with it, or METRICS_PUBLIC=1 to open it")


@bp.get("/metrics")
def scrape() -> Response:
    """Operators (Prometheus): this process's counters, histogram and gauges."""
    _authorize(services().settings)
    body, content_type = metrics.exposition(socketio.server)
    return Response(body, status=200, content_type=content_type,
                    headers={"Cache-Control": "no-store"})
