"""Operations: GET /metrics in the Prometheus text format."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from utils import metrics
from utils.errors import ApiError
from utils.extensions import socketio

bp = Blueprint("metrics", __name__)


@bp.before_app_request
def _stamp_arrival() -> None:
    # The start of the producer-to-emit latency: one clock read per HTTP request.
    metrics.mark_request_start()


def _authorize(expected: str | None) -> None:
    """Open unless METRICS_TOKEN is set; then ``Authorization: Bearer <token>``."""
    if not expected:
        return
    scheme, _, offered = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        raise ApiError(401, "metrics_token_missing", "send Authorization: Bearer <METRICS_TOKEN>",
                       {"WWW-Authenticate": 'Bearer realm="metrics"'})
    if not hmac.compare_digest(offered.strip().encode(), expected.encode()):
        raise ApiError(403, "metrics_token_invalid", "the metrics token is not valid")


@bp.get("/metrics")
def scrape() -> Response:
    """Operators (Prometheus): this process's counters, histogram and gauges."""
    _authorize(current_app.config["SETTINGS"].metrics_token)
    body, content_type = metrics.exposition(socketio.server)
    return Response(body, status=200, content_type=content_type,
                    headers={"Cache-Control": "no-store"})
