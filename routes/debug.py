"""GET /debug: a diagnostics page to open on the device that has the problem.

The page is static HTML plus /static/debug.js and /static/debug.css (no inline
script or style, so ``Content-Security-Policy: default-src 'self'`` holds). It shows
nothing secret: minting a token and sending a test notification exist in
development only, and production answers those routes with 404. On a production
server a phone signs in through a one-time link a producer mints
(``POST /debug/links``, utils/auth/links.py).

It works wherever the server runs, npm or not: the notification client is committed
(static/notifications.js), and socket.io-client, third-party code the repository
does not carry, comes from node_modules when npm installed it there, else from
jsDelivr, pinned by version and by hash.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    render_template,
    request,
    send_file,
)

from routes.body import json_body
from utils.auth import links
from utils.auth.access import require_api_key, require_user
from utils.auth.tokens import MAX_USER_ID_LENGTH, create_access_token
from utils.config.settings import Settings
from utils.edge.headers import content_security_policy
from utils.errors import ApiError
from utils.notifications.models import isoformat, utcnow
from utils.notifications.notifier import notify_users
from utils.services import services

ROOT = Path(__file__).resolve().parents[1]
CLIENT_DIST = ROOT / "node_modules" / "socket.io-client" / "dist"
CLIENT_FILES = ("socket.io.min.js", "socket.io.min.js.map")
CLIENT_PATH = "/debug/socket.io.min.js"
# socket.io-client where npm did not install it: the version the tests use, from
# jsDelivr, which serves npm's files byte for byte. The browser runs it only if its
# SHA-384 is this one (Subresource Integrity), computed from npm's
# node_modules/socket.io-client/dist/socket.io.min.js (tests/unit/routes/test_debug.py
# checks it against the installed file).
CDN_CLIENT_URL = "https://cdn.jsdelivr.net/npm/socket.io-client@4.8.1/dist/socket.io.min.js"
CDN_CLIENT_INTEGRITY = "sha384-mkQ3/7FUtcGyoppY6bz/PORYoGqOl7/aSUMn2ymDOJcapfS6PHqxhRTMh1RR0Q6+"
MINT_TTL_SECONDS = 3600

bp = Blueprint("debug", __name__, url_prefix="/debug")


def settings() -> Settings:
    return services().settings


@bp.before_request
def _enabled() -> None:
    if not settings().debug_page:
        abort(404)


def development_only(view: Callable) -> Callable:
    """Production answers 404 before anything else, token or not."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if settings().is_production:
            abort(404)
        return view(*args, **kwargs)

    return wrapper


def client_url() -> str:
    """Where the page loads socket.io-client: the configured URL, else the copy
    installed by npm, else jsDelivr's."""
    if settings().socketio_client_url:
        return settings().socketio_client_url
    return CLIENT_PATH if (CLIENT_DIST / CLIENT_FILES[0]).is_file() else CDN_CLIENT_URL


@bp.get("")
def page():
    """Anyone: the diagnostics page."""
    url = client_url()
    from_cdn = url == CDN_CLIENT_URL
    response = current_app.make_response(render_template(
        "debug.html",
        client_url=url,
        client_integrity=CDN_CLIENT_INTEGRITY if from_cdn else None,
        development=not settings().is_production,
    ))
    if from_cdn:
        # The server's policy (utils/edge/headers.py) with exactly that one script
        # added; the middleware keeps a policy a response already has.
        response.headers["Content-Security-Policy"] = content_security_policy(
            request.environ.get("HTTP_HOST"), CDN_CLIENT_URL)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


@bp.get("/<any(" + ",".join(f'"{n}"' for n in CLIENT_FILES) + "):name>")
def socketio_client(name: str):
    """The page: socket.io-client from the installed npm package."""
    path = CLIENT_DIST / name
    if not path.is_file():
        raise ApiError(404, "not_found", "socket.io-client is not installed (run npm ci)")
    return send_file(path, max_age=3600)


@bp.get("/origin")
def origin_check():
    """The page: whether ``?origin=`` may open sockets here (the same test Engine.IO
    applies), so a phone can check the page's own origin or a front end's."""
    origin = request.args.get("origin", "")[:300]
    policy = services().origins
    return jsonify({"origin": origin, "allowed": bool(origin) and policy(origin, request.environ)})


@bp.post("/token")
@development_only
def mint_token():
    """The page, in development only: a one-hour token for a test user."""
    body: Any = json_body() if request.content_length else {}
    if not isinstance(body, dict):
        raise ApiError(400, "validation_error", 'send {"user_id": "..."}')
    user_id = _user_id({"user_id": body.get("user_id") or "debug-user"})
    token = create_access_token(user_id, MINT_TTL_SECONDS)
    return jsonify({"token": token, "user_id": user_id, "expires_in": MINT_TTL_SECONDS})


@bp.post("/notify")
@development_only
@require_user
def send_test_notification():
    """The page, in development only: a test notification to the token's own user."""
    delivery = notify_users([g.user_id], "debug", "Test notification",
                            "Sent from the diagnostics page.", {"source": "debug"})
    return jsonify(delivery.response), 201


def _user_id(body: Any) -> str:
    """The body's ``user_id``, stripped: 1 to 128 printable characters, or a 400."""
    user_id = str(body.get("user_id") or "").strip() if isinstance(body, dict) else ""
    if not 0 < len(user_id) <= MAX_USER_ID_LENGTH or not user_id.isprintable():
        raise ApiError(400, "validation_error",
                       f"user_id must be 1 to {MAX_USER_ID_LENGTH} printable characters")
    return user_id


@bp.post("/links")
@require_api_key
def mint_link():
    """Producers: a one-time link that signs a phone's /debug page in as ``user_id``.
    The code is in the fragment, which no server sees; it works once, within ``ttl``
    seconds (default 600, at most 3600)."""
    body = json_body()
    user_id = _user_id(body)
    ttl = body.get("ttl", links.LINK_TTL_DEFAULT)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= links.LINK_TTL_MAX:
        raise ApiError(400, "validation_error",
                       f"ttl must be an integer of seconds, 1 to {links.LINK_TTL_MAX}")
    code, expires_at = links.mint(user_id, ttl, utcnow())
    return jsonify({"url": f"{request.url_root}debug#code={code}", "code": code,
                    "user_id": user_id, "expires_at": isoformat(expires_at)}), 201


@bp.post("/sign-in")
def sign_in():
    """The page: a link's code traded, once, for a user token of an hour."""
    body = json_body()
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not 0 < len(code) <= 100:
        raise ApiError(400, "validation_error", 'send {"code": "<the code from the link>"}')
    user_id = links.spend(code, utcnow())
    if user_id is None:
        raise ApiError(410, "link_spent", "this link was used already, has expired or is "
                       "unknown: ask for a new one")
    token = create_access_token(user_id, links.TOKEN_TTL)
    return jsonify({"token": token, "user_id": user_id, "expires_in": links.TOKEN_TTL})
