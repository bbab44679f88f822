"""The JSON body of a request, or a contract-shaped 400/413/415."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import request

from utils.errors import ApiError, ValidationError


def _not_json(constant: str) -> NoReturn:
    # Python's json reads NaN, Infinity and -Infinity; JSON and browsers have no such values.
    raise ValidationError(f"the body holds {constant}, which JSON does not allow; "
                          "send a number or null")


def _body_bytes() -> bytes:
    data = request.get_data()
    limit = request.max_content_length
    # A chunked body has no Content-Length to check first: werkzeug stops reading it at
    # the limit and returns what it read, cut short. A byte beyond means too large.
    if request.content_length is None and limit is not None and len(data) >= limit \
            and request.environ["wsgi.input"].read(1):
        raise ApiError(413, "payload_too_large", f"the body is larger than {limit // 1024} KiB")
    return data


def json_body() -> Any:
    """The request's JSON body, or a contract-shaped 400/413/415."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    try:
        body = json.loads(_body_bytes(), parse_constant=_not_json)
    except ValidationError:  # a ValueError too: not invalid_json, but its own 400
        raise
    except RecursionError:  # the parser recurses once per level of nesting
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    except ValueError:  # not JSON, or not UTF-8
        body = None
    if body is None:
        raise ApiError(400, "invalid_json", "the body is not valid JSON")
    return body
