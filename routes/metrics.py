"""Operations: GET /metrics in the Prometheus text format."""

from __future__ import annotations

from flask import Blueprint, Response

from utils.auth.credentials import require_bearer_secret
from utils.extensions import socketio
from utils.ops import metrics
from utils.services import services

bp = Blueprint("metrics", __name__)


@bp.before_app_request
def _stamp_arrival() -> None:
    # The start of the producer-to-emit latency: one clock read per HTTP request.
    metrics.mark_request_start()


def _authorize(expected: str | None) -> None:
    """Open unless METRICS_TOKEN is set; then ``Authorization: Bearer <token>``."""
    if expected:
        require_bearer_secret(expected, "metrics", "metrics_token", "METRICS_TOKEN")


@bp.get("/metrics")
def scrape() -> Response:
    """Operators (Prometheus): this process's counters, histogram and gauges."""
    _authorize(services().settings.metrics_token)
    body, content_type = metrics.exposition(socketio.server)
    return Response(body, status=200, content_type=content_type,
                    headers={"Cache-Control": "no-store"})
