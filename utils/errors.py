"""The one error shape, {"error": {"code", "message"}}, and the errors that carry it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from flask import jsonify

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


def error_body(code: str, message: str,
               items: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The one error shape, for HTTP bodies, Engine.IO refusals and socket acks. A
    request that carries a list (POST /api/notifications/bulk) adds ``items``: one
    ``{"index", "code", "message"}`` per bad element, by its index in the list."""
    if items is None:
        return {"error": {"code": code, "message": message}}
    return {"error": {"code": code, "message": message, "items": items}}


def refusal(start_response: Callable, status: str, code: str, message: str,
            headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """The error shape as a raw WSGI response, for layers in front of Flask (the
    Engine.IO guard, the drain), which answer before any Flask handler runs."""
    body = json.dumps(error_body(code, message)).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))), *headers])
    return [body]


def error_response(status: int, code: str, message: str, headers: dict | None = None,
                   items: list[dict[str, Any]] | None = None):
    response = jsonify(error_body(code, message, items))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class ValidationError(ValueError):
    """Bad input: an HTTP 400 (or ``status``) from the one handler in
    utils/edge/error_handlers.py, an error ack on a socket."""

    def __init__(self, message: str, code: str = "validation_error", status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class ItemsInvalid(ValidationError):
    """Bad elements of a list in a request: a 400 ``validation_error`` whose error
    carries ``items``, one ``{"index", "code", "message"}`` per bad element
    (error_body). Its route answers it with error_response(..., items=exc.items)."""

    def __init__(self, message: str, items: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.items = items
