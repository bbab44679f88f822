"""One JSON error shape for every HTTP error: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from utils.ops import metrics

log = logging.getLogger(__name__)

# Codes for statuses raised by Flask/Werkzeug itself rather than by our handlers.
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered to the client as-is, in the contract's shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The one error shape, for HTTP bodies, Engine.IO refusals and socket acks."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    response = jsonify(error_body(code, message))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = STATUS_CODES.get(status, "http_error")
        headers = {}
        if status == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(status, code, exc.description or code, headers)

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    # pg8000 under gevent: a pool pre-ping on a connection the server reset raises the
    # socket's ConnectionResetError unwrapped. The only connections a request opens
    # itself are the database's (emits never raise into the request).
    @app.errorhandler(ConnectionError)
    def _database_error(exc: Exception):
        log.error("database error: %s", type(exc).__name__)
        metrics.database_error("http")
        return error_response(
            503, "database_unavailable", "the database is unavailable; retry later",
            {"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed to handle this request")
