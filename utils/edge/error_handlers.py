"""One JSON error shape for every HTTP error: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from utils.db.schema import UPGRADE_COMMAND, names_a_missing_table
from utils.errors import STATUS_CODES, ApiError, ValidationError, error_response
from utils.ops import metrics

log = logging.getLogger(__name__)

# A table or column the code uses is missing: the database was not migrated.
NOT_MIGRATED = "database_not_migrated"
NOT_MIGRATED_MESSAGE = ("the database schema is older than this server's code; its operator "
                        f"must run `{UPGRADE_COMMAND}` (retrying will not help)")
NOT_MIGRATED_LOG = (f"a table or column is missing: the database was not migrated; run "
                    f"`{UPGRADE_COMMAND}` (GET /readyz names the revisions)")

def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(ValidationError)
    def _validation_error(exc: ValidationError):
        return error_response(exc.status, exc.code, exc.message)

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
        metrics.database_error("http")
        if names_a_missing_table(exc):  # not "retry later": retrying changes nothing
            log.error("database error: %s: %s", type(exc).__name__, NOT_MIGRATED_LOG)
            return error_response(503, NOT_MIGRATED, NOT_MIGRATED_MESSAGE)
        log.error("database error: %s", type(exc).__name__)
        return error_response(
            503, "database_unavailable", "the database is unavailable; retry later",
            {"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed to handle this request")
