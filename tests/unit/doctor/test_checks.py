"""Each of the doctor's checks, driven by replies recorded from real servers
(tests/support/doctor_server.py), without any server: pass, warn and fail."""

from __future__ import annotations

import io
import json
import time

import pytest

from tests.support.doctor_context import ALLOWED, TIMEOUT, URL, context, token
from tests.support.doctor_server import (
    HEALTHZ,
    HEALTHZ_THREADING,
    INVALID_SESSION,
    RATE_LIMITED,
    STICKY_COOKIE,
    STOCK_NOT_FOUND,
    TRANSPORT_OVERLAP,
    RecordedServer,
    connected,
    healthz,
    nginx_refusal,
    refused,
    reply,
    stock_connect,
)
from utils.doctor import main
from utils.doctor.advice import NOT_JUDGED_SPLIT, PROXY_FIX, SPLIT_FIX, WORKER_FIX
from utils.doctor.checks import (
    CHECKS,
    auth,
    concurrency,
    handshake,
    origins,
    reachability,
    round_trip,
    run_checks,
    safari,
    server,
    sessions,
    upgrade,
    websocket,
)
from utils.doctor.model import FAIL, PASS, SKIP, WARN, Options, Unreachable
from utils.doctor.report import exit_code, render_table
from utils.doctor.target import Target
from utils.doctor.transport import CertificateProblem, ProbeError, ProbeTimeout


@pytest.fixture
def fake() -> RecordedServer:
    return RecordedServer()


# -- reachability ----------------------------------------------------------------------


def test_reachability_passes_on_a_local_address(fake):
    result = reachability.check(context(fake))
    assert result.status == PASS
    assert "plain http on a local address" in result.evidence
    assert result.facts.target == Target.parse(URL)


def test_reachability_warns_of_plain_http_on_a_public_host(fake):
    result = reachability.check(context(fake, "http://notify.example.com", origin=None))
    assert result.status == WARN
    assert "tokens cross the network in clear" in result.evidence
    assert "https" in result.fix


def test_reachability_posts_its_sessions_close_never_a_post_without_a_sid(fake):
    """A POST without a sid is logged as ``ERROR engineio.server: Invalid session None``
    by a server without this backend's guard; the session's own CLOSE is not."""
    reachability.check(context(fake))
    posts = [(path, headers) for method, path, headers in fake.requests if method == "POST"]
    assert len(posts) == 1 and "sid=sid-0000-recorded" in posts[0][0]
    assert fake.sessions["sid-0000-recorded"].closed


def test_reachability_warns_of_a_certificate_about_to_expire(fake):
    fake.certificate = time.time() + 3 * 86400
    result = reachability.check(context(fake, "https://notify.example.com"))
    assert result.status == WARN and "certificate expires in" in result.evidence


@pytest.mark.parametrize("status", [301, 302])
def test_reachability_fails_when_a_post_is_redirected_as_a_get(fake, status):
    fake.redirects["http://notify.example.com"] = reply(
        status, "", {"location": "https://notify.example.com/socket.io/"})
    fake.certificate = time.time() + 90 * 86400
    result = reachability.check(context(fake, "http://notify.example.com", origin=None))
    assert result.status == FAIL
    assert f"answered {status}" in result.evidence and "GET" in result.evidence
    assert "307/308" in result.fix
    assert result.facts.target == Target.parse("https://notify.example.com")


def test_reachability_follows_a_redirect_that_keeps_the_method(fake):
    fake.redirects[URL] = reply(308, "", {"location": "http://127.0.0.1:9000/socket.io/"})
    result = reachability.check(context(fake))
    assert result.status == PASS
    assert "redirected with 308 (method kept)" in result.evidence
    assert result.facts.target == Target.parse("http://127.0.0.1:9000")


def test_reachability_fails_fatally_on_a_rejected_certificate(fake):
    fake.handshake_error = CertificateProblem("self-signed certificate")
    result = reachability.check(context(fake, "https://notify.example.com"))
    assert result.status == FAIL and result.facts.fatal
    assert "certificate rejected" in result.evidence


def test_reachability_fails_fatally_when_connections_are_accepted_but_not_answered(fake):
    fake.handshake_error = ProbeTimeout("no answer within 0.5 s")
    result = reachability.check(context(fake))
    assert result.status == FAIL and result.facts.fatal
    assert result.fix == WORKER_FIX


def test_reachability_raises_unreachable_when_nothing_answers(fake):
    fake.handshake_error = ProbeError("connection refused")
    with pytest.raises(Unreachable, match="connection refused"):
        reachability.check(context(fake))


def test_reachability_fails_fatally_without_a_socketio_server(fake):
    fake.handshake_status = 404
    result = reachability.check(context(fake))
    assert result.status == FAIL and result.facts.fatal and "answered 404" in result.evidence


@pytest.mark.parametrize(("url", "origin", "status"), [
    ("http://notify.example.com", "https://app.example.com", FAIL),  # mixed content
    ("http://notify.example.com", None, WARN),  # tokens in clear
    ("http://127.0.0.1:8000", "https://app.example.com", None),  # a local test set-up
])
def test_plain_http_is_judged_by_where_it_is_served(url, origin, status):
    """Moved from tests/server/test_doctor.py (it needs no server)."""
    _note, problem = reachability.plain_http(Target.parse(url), origin)
    assert (problem.status if problem else None) == status


# -- server facts ----------------------------------------------------------------------


def test_server_facts_pass_for_eventlet(fake):
    result = server.check(context(fake))
    assert result.status == PASS and "async_mode eventlet" in result.evidence
    assert result.data == HEALTHZ


def test_server_facts_warn_without_healthz(fake):
    fake.healthz = reply(404, STOCK_NOT_FOUND, {"content-type": "text/html; charset=utf-8"})
    result = server.check(context(fake))
    assert result.status == WARN and "answered 404 without async_mode" in result.evidence


def test_server_facts_warn_when_not_monkey_patched(fake):
    fake.healthz = healthz({**HEALTHZ, "monkey_patched": False})
    result = server.check(context(fake))
    assert result.status == WARN and "not monkey-patched" in result.evidence


def test_server_facts_fail_in_threading_mode(fake):
    fake.healthz = healthz(HEALTHZ_THREADING)
    result = server.check(context(fake))
    assert result.status == FAIL and "threading" in result.evidence
    assert result.fix == WORKER_FIX


# -- polling handshake -----------------------------------------------------------------


def test_handshake_passes_and_learns_the_upgrades(fake):
    result = handshake.check(context(fake))
    assert result.status == PASS and "pingInterval 25 s" in result.evidence
    assert result.facts.upgrades == ("websocket",) and result.facts.cookie == ""


def test_handshake_learns_the_cookie_it_sets(fake):
    fake.set_cookie = STICKY_COOKIE
    assert handshake.check(context(fake)).facts.cookie == "SERVERID"


@pytest.mark.parametrize(("change", "words", "fix"), [
    ({"pingInterval": 58000}, "idle timeouts", "PING_INTERVAL=25"),
    ({"pingTimeout": 2000}, "background tabs", "PING_TIMEOUT=60"),
    ({"maxPayload": None}, "older Engine.IO", "upgrade to python-engineio"),
])
def test_handshake_warns_of_risky_values(fake, change, words, fix):
    fake.open_info.update(change)
    result = handshake.check(context(fake))
    assert result.status == WARN and words in result.evidence and result.fix.startswith(fix)


def test_handshake_fails_without_a_websocket_upgrade(fake):
    fake.open_info["upgrades"] = []
    result = handshake.check(context(fake))
    assert result.status == FAIL and "no websocket upgrade offered" in result.evidence


# -- split sessions --------------------------------------------------------------------


def test_split_sessions_pass_when_every_poll_reaches_its_issuer(fake):
    result = sessions.check(context(fake))
    assert result.status == PASS
    assert f"{sessions.SESSIONS} of {sessions.SESSIONS} sessions held" in result.evidence
    assert result.facts.split is False
    assert len(fake.sessions) == sessions.SESSIONS


def test_split_sessions_fail_behind_round_robin(fake):
    fake.split = lambda number: True  # every poll reaches the other node
    result = sessions.check(context(fake))
    assert result.status == FAIL and result.facts.split is True
    assert "8 of 8 sessions answered 400 Invalid session by the URL that issued them" \
        in result.evidence
    assert "different processes or replicas" in result.evidence
    assert result.fix == SPLIT_FIX


def test_split_sessions_count_the_sessions_that_split(fake):
    fake.split = lambda number: number in (1, 4, 6)
    result = sessions.check(context(fake))
    assert result.status == FAIL
    assert result.evidence.startswith("3 of 8 sessions answered 400 Invalid session")


def test_split_sessions_warn_when_only_a_sticky_cookie_holds_them(fake):
    fake.split, fake.sticky, fake.set_cookie = (lambda number: True), True, STICKY_COOKIE
    result = sessions.check(context(fake, cookie="SERVERID"))
    assert result.status == WARN and result.facts.split is False
    assert "without the cookie SERVERID" in result.evidence
    assert "withCredentials: true" in result.fix


def test_split_sessions_warn_when_some_polls_are_not_answered(fake):
    fake.refuse_polls = lambda number: reply(429, RATE_LIMITED) if number == 2 else None
    result = sessions.check(context(fake))
    assert result.status == WARN and result.facts.split is False
    assert "7 of 8 sessions held; 1 could not be polled" in result.evidence


def test_split_sessions_are_not_judged_without_sessions(fake):
    fake.handshake_status = 503
    result = sessions.check(context(fake))
    assert result.status == SKIP and "no session could be polled" in result.evidence


# -- CORS and the foreign origin -------------------------------------------------------


def test_cors_is_skipped_without_origin(fake):
    assert origins.check_allowed(context(fake, origin=None)).status == SKIP


def test_cors_fails_for_an_origin_missing_from_frontend_urls(fake):
    result = origins.check_allowed(context(fake, origin="https://app.example.com"))
    assert result.status == FAIL
    assert "FRONTEND_URLS=https://app.example.com" in result.fix


@pytest.mark.parametrize(("check", "change", "status", "words"), [
    pytest.param(origins.check_allowed, {}, PASS, ["WebSocket accepted it too"],
                 id="cors-passes-for-an-allowed-origin"),
    pytest.param(origins.check_allowed, {"credentials": False}, WARN,
                 ["without Access-Control-Allow-Credentials"],
                 id="cors-warns-without-credentials"),
    pytest.param(origins.check_allowed, {"websocket_origins": set()}, FAIL,
                 ["refused (400) on WebSocket"],
                 id="cors-fails-when-only-websocket-refuses-the-origin"),
    pytest.param(origins.check_foreign, {}, PASS, ["refused on polling (400)"],
                 id="foreign-origin-passes-when-refused-on-both"),
    pytest.param(origins.check_foreign, {"echo_every_origin": True}, FAIL,
                 ["polling and WebSocket", "echoes every origin"],
                 id="foreign-origin-fails-when-every-origin-is-echoed"),
])
def test_the_origin_checks_judge_what_the_server_answered(fake, check, change, status, words):
    for name, value in change.items():
        setattr(fake, name, value)
    result = check(context(fake))
    assert result.status == status
    assert [w for w in words if w not in result.evidence] == [], result.evidence


# -- auth and connect without token ----------------------------------------------------


def test_auth_is_skipped_without_token(fake):
    assert auth.check_token(context(fake)).status == SKIP


def test_auth_passes_and_learns_the_user(fake):
    result = auth.check_token(context(fake, jwt_token=token()))
    assert result.status == PASS and "connected as user alice, unread 0" in result.evidence
    assert result.facts.user_id == "alice" and result.facts.token_in_payload is True


def test_auth_warns_of_a_token_about_to_expire(fake):
    result = auth.check_token(context(fake, jwt_token=token(ttl=60)))
    assert result.status == WARN and "expires within 5 minutes" in result.fix


def test_auth_warns_without_auth_success(fake):
    fake.connect_answer = lambda auth_, headers: [connected("socket-sid")]
    result = auth.check_token(context(fake, jwt_token=token()))
    assert result.status == WARN and "no auth_success arrived" in result.evidence


@pytest.mark.parametrize(("code", "fix"), [
    ("token_expired", "mint a fresh token"),
    ("token_invalid", "JWT_AUDIENCE (token aud \"web\")"),
])
def test_auth_fails_with_the_refusal_code(fake, code, fix):
    fake.connect_answer = lambda auth_, headers: [refused(code)]
    result = auth.check_token(context(fake, jwt_token=token(aud="web")))
    assert result.status == FAIL and f"({code})" in result.evidence
    assert fix in result.fix and 'aud "web"' in result.evidence
    assert result.facts.token_in_payload is False


def test_no_token_passes_when_refused_as_token_missing(fake):
    result = auth.check_no_token(context(fake))
    assert result.status == PASS and "(token_missing)" in result.evidence


def test_no_token_warns_when_refused_with_another_code(fake):
    fake.connect_answer = lambda auth_, headers: [refused("token_invalid")]
    assert auth.check_no_token(context(fake)).status == WARN


def test_no_token_fails_when_accepted(fake):
    fake.connect_answer = stock_connect
    result = auth.check_no_token(context(fake))
    assert result.status == FAIL and "unauthenticated sockets accepted" in result.evidence


# -- websocket and compression ---------------------------------------------------------


def test_websocket_passes_and_learns_what_was_negotiated(fake):
    result = websocket.check(context(fake, jwt_token=token()))
    assert result.status == PASS and "Socket.IO connected as alice" in result.evidence
    assert result.facts.deflate == ""


def test_websocket_fails_naming_the_proxy_that_drops_the_upgrade(fake):
    fake.websocket_refusal = nginx_refusal()
    result = websocket.check(context(fake, upgrades=("websocket",)))
    assert result.status == FAIL
    assert "nginx" in result.evidence and "Upgrade header did not reach the app" in result.evidence
    assert result.fix == PROXY_FIX


def test_websocket_fails_when_it_holds_the_only_worker(fake):
    fake.one_at_a_time = True
    result = websocket.check(context(fake))
    assert result.status == FAIL and "WebSocket is unusable" in result.evidence


def test_websocket_refusal_for_an_unknown_session_names_the_split_not_a_proxy():
    refused_reply = reply(400, INVALID_SESSION % "sid-1")
    evidence, fix = websocket.refusal(Target.parse(URL), True, refused_reply)
    assert "different processes or replicas" in evidence and "Upgrade header" not in evidence
    assert fix == SPLIT_FIX


def test_compression_is_skipped_without_websocket(fake):
    assert websocket.check_compression(context(fake)).status == SKIP


def test_compression_passes_when_not_negotiated(fake):
    assert websocket.check_compression(context(fake, deflate="")).status == PASS


def test_compression_warns_when_negotiated(fake):
    result = websocket.check_compression(context(
        fake, deflate="permessage-deflate; client_max_window_bits=15"))
    assert result.status == WARN and "Safari" in result.evidence


# -- concurrency -----------------------------------------------------------------------


def test_concurrency_passes_when_answered_promptly(fake):
    result = concurrency.check(context(fake))
    assert result.status == PASS and "while a long-poll was pending" in result.evidence


def test_concurrency_warns_when_answered_slowly(fake):
    fake.healthz = healthz(elapsed=2.5)
    assert concurrency.check(context(fake)).status == WARN


def test_concurrency_fails_on_one_request_at_a_time(fake):
    fake.one_at_a_time = True
    result = concurrency.check(context(fake))
    assert result.status == FAIL and "sync worker" in result.evidence
    assert result.fix == WORKER_FIX


# -- polling → websocket ---------------------------------------------------------------


def test_upgrade_passes_and_releases_the_long_poll(fake):
    result = upgrade.check(context(fake, jwt_token=token()))
    assert result.status == PASS
    assert "probe answered and upgraded" in result.evidence and "connected" in result.evidence
    assert "the pending long-poll was released" in result.evidence


def test_upgrade_fails_naming_the_proxy_that_drops_the_upgrade(fake):
    fake.upgrade_refusal = nginx_refusal(TRANSPORT_OVERLAP)
    result = upgrade.check(context(fake, upgrades=("websocket",)))
    assert result.status == FAIL and "Upgrade header did not reach the app" in result.evidence


def test_upgrade_to_a_process_that_lacks_the_session_names_the_split(fake):
    fake.split = lambda number: True
    fake.refuse_polls = lambda number: None
    result = upgrade.check(context(fake, upgrades=("websocket",)))
    assert result.status == FAIL
    assert "Upgrade header" not in result.evidence and result.fix == SPLIT_FIX


def test_upgrade_fails_on_one_request_at_a_time(fake):
    fake.one_at_a_time = True
    result = upgrade.check(context(fake))
    assert result.status == FAIL and result.fix == WORKER_FIX


# -- round trip ------------------------------------------------------------------------


def test_round_trip_is_skipped_without_api_key_or_user(fake):
    assert round_trip.check(context(fake, jwt_token=token())).status == SKIP
    result = round_trip.check(context(fake, jwt_token=token(), api_key="k"))
    assert result.status == SKIP and "no connected user" in result.evidence


def test_round_trip_passes_over_both_transports(fake):
    result = round_trip.check(context(fake, jwt_token=token(), api_key="k", user_id="alice"))
    assert result.status == PASS, result.evidence
    assert "polling" in result.evidence and "websocket" in result.evidence


def test_round_trip_fails_when_one_transport_gets_nothing(fake):
    fake.deliver_over = {"websocket"}
    result = round_trip.check(context(fake, jwt_token=token(), api_key="k", user_id="alice"))
    assert result.status == FAIL and "not delivered over polling" in result.evidence
    assert "REDIS_URL" in result.fix


def test_round_trip_fails_with_a_wrong_api_key(fake):
    from tests.support.doctor_server import API_KEY_INVALID, JSON_TYPE

    fake.notification_reply = reply(403, API_KEY_INVALID, JSON_TYPE)
    result = round_trip.check(context(fake, jwt_token=token(), api_key="k", user_id="alice"))
    assert result.status == FAIL and "answered 403 api_key_invalid" in result.evidence
    assert "NOTIFY_API_KEY" in result.fix


# -- Safari ----------------------------------------------------------------------------


def test_safari_passes_without_cookie_and_with_the_auth_payload(fake):
    result = safari.check(context(fake, cookie="", token_in_payload=True, deflate=""))
    assert result.status == PASS and "read from the auth payload" in result.evidence


def test_safari_warns_of_a_cookie(fake):
    result = safari.check(context(fake, cookie="SERVERID"))
    assert result.status == WARN and "sets a cookie (SERVERID)" in result.evidence


def test_safari_warns_of_compression(fake):
    result = safari.check(context(fake, deflate="permessage-deflate"))
    assert result.status == WARN and "see compression" in result.evidence


def test_safari_warns_when_the_token_only_works_in_a_header(fake):
    def header_only(auth_, headers):
        return [connected("socket-sid")] if "Authorization" in headers else [
            refused("token_missing")]

    fake.connect_answer = header_only
    result = safari.check(context(fake, jwt_token=token(), token_in_payload=False))
    assert result.status == WARN and "Authorization header" in result.evidence


# -- the run: one list, in order -------------------------------------------------------


def run(fake: RecordedServer, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main([URL, "--timeout", str(TIMEOUT), *args], out=out, err=io.StringIO(),
                transport=fake)
    return code, out.getvalue()


def test_every_check_runs_and_is_reported_in_the_one_order(fake):
    findings, target = run_checks(Options(URL, ALLOWED, token(), "k", TIMEOUT), fake)
    assert [f.id for f in findings] == [c.id for c in CHECKS]
    assert {f.status for f in findings} == {PASS}, [(f.id, f.result.evidence) for f in findings]
    assert target == Target.parse(URL)


def test_split_sessions_leave_the_session_checks_not_judged(fake):
    fake.split = lambda number: True
    findings, _target = run_checks(Options(URL, ALLOWED, token(), "k", TIMEOUT), fake)
    found = {f.id: f.result for f in findings}
    assert found["split_sessions"].status == FAIL
    for check in ("auth", "no_token", "concurrency", "upgrade", "round_trip"):
        assert (found[check].status, found[check].evidence) == (SKIP, NOT_JUDGED_SPLIT)
    assert found["websocket"].status == PASS  # one connection: nothing to split
    assert not any("Upgrade header" in r.evidence for r in found.values())
    assert exit_code(findings) == 1
    text = render_table(Options(URL), findings, colour=False)
    assert "✗ split sessions" in text and "deploy/haproxy-sticky.cfg" in text


def test_a_fatal_result_stops_the_run(fake):
    fake.handshake_status = 404
    findings, _target = run_checks(Options(URL), fake)
    assert [f.id for f in findings] == ["reachability"]


def test_main_prints_json_and_exits_by_the_worst_status(fake):
    fake.healthz = healthz(HEALTHZ_THREADING)
    code, out = run(fake, "--json")
    report = json.loads(out)
    assert code == 1 and report["exit_code"] == 1 and report["verdict"] == FAIL
    assert report["checks"][1]["id"] == "server" and report["checks"][1]["status"] == FAIL
    assert [c["id"] for c in report["checks"]] == [c.id for c in CHECKS]


def test_main_exits_2_when_unreachable(fake):
    fake.handshake_error = ProbeError("connection refused")
    fake.tcp_open = False
    code, out = run(fake, "--json")
    assert code == 2 and json.loads(out)["verdict"] == "unreachable"
