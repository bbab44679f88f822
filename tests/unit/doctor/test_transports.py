"""The doctor judges a server by the transports it serves (utils/doctor/served.py):
a WebSocket-only server (SOCKETIO_TRANSPORTS=websocket, the doctor's own fix for
split sessions) is checked over WebSocket, and is never sent a polling request it
must refuse. Driven by replies recorded from real servers
(tests/support/doctor_server.py), without any server."""

from __future__ import annotations

import io
import json
import time

import pytest

from tests.support.doctor_context import ALLOWED, TIMEOUT, URL, context, token
from tests.support.doctor_server import STOCK_NOT_FOUND, RecordedServer, reply
from utils.doctor import main, served
from utils.doctor.advice import SPLIT_FIX, WEBSOCKET_ONLY
from utils.doctor.checks import (
    auth,
    concurrency,
    handshake,
    origins,
    reachability,
    round_trip,
    run_checks,
    server,
    sessions,
    upgrade,
    websocket,
)
from utils.doctor.cli import UsageError, parse_args
from utils.doctor.model import FAIL, PASS, SKIP, WARN, Context, Facts, Options
from utils.doctor.report import exit_code, render_table
from utils.doctor.target import Target

# Judged over WebSocket on a WebSocket-only server; the rest are skipped, not failed.
OVER_WEBSOCKET = ("cors", "foreign_origin", "auth", "no_token", "websocket", "concurrency",
                  "round_trip")
NOTHING_TO_JUDGE = ("handshake", "split_sessions", "upgrade")


def everything(transports: tuple[str, ...] | None = None) -> Options:
    """--origin, --token and --api-key: every check has something to judge."""
    return Options(URL, ALLOWED, token(), "k", TIMEOUT, transports=transports)


def findings_of(fake: RecordedServer, options: Options) -> dict:
    findings, _target = run_checks(options, fake)
    return {f.id: f.result for f in findings}


def websocket_only_context(fake: RecordedServer, origin: str | None = ALLOWED,
                           **facts) -> Context:
    return context(fake, origin=origin, jwt_token=token(), api_key="k",
                   transports=served.WEBSOCKET_ONLY, transports_from=served.FROM_HEALTHZ,
                   **facts)


@pytest.fixture
def fake() -> RecordedServer:
    return RecordedServer()


# -- the doctor's own fix passes it -----------------------------------------------------


def test_the_split_sessions_fix_it_recommends_passes(fake):
    """Every polling session splits (round-robin across replicas), and the fix the
    split-sessions check names is applied: WebSocket-only with a message queue."""
    assert "SOCKETIO_TRANSPORTS=websocket with REDIS_URL" in SPLIT_FIX
    fake.split = lambda number: True
    fake.serve_websocket_only()
    findings, _target = run_checks(everything(), fake)
    found = {f.id: f.result for f in findings}
    assert exit_code(findings) == 0
    assert {c: r.evidence for c, r in found.items() if r.status == FAIL} == {}
    for check in OVER_WEBSOCKET:
        assert found[check].status == PASS, (check, found[check].evidence)
    for check in NOTHING_TO_JUDGE:
        assert found[check].status == SKIP
        assert found[check].evidence.startswith(f"{WEBSOCKET_ONLY}: transports websocket per "
                                                "/healthz")
    assert fake.polling_requests() == []  # nothing the server would have to refuse


def test_the_checks_that_hold_a_session_say_they_went_over_websocket(fake):
    fake.serve_websocket_only()
    found = findings_of(fake, everything())
    assert "accepted on WebSocket (101)" in found["cors"].evidence
    assert "refused on WebSocket (400)" in found["foreign_origin"].evidence
    assert "while a WebSocket was open" in found["concurrency"].evidence
    assert "websocket" in found["round_trip"].evidence
    assert "second websocket" in found["round_trip"].evidence
    assert found["round_trip"].data.keys() == {"websocket_ms", "second_websocket_ms"}
    assert "connected as user alice" in found["auth"].evidence
    # The open packet's values, judged where the skipped handshake would have.
    assert "pingInterval 25 s, pingTimeout 60 s" in found["websocket"].evidence


def test_the_table_marks_the_polling_checks_skipped(fake):
    fake.serve_websocket_only()
    findings, _target = run_checks(everything(), fake)
    text = render_table(everything(), findings, colour=False)
    assert "· polling handshake      skipped (server is WebSocket-only)" in text
    assert "· polling → websocket    skipped (server is WebSocket-only)" in text
    assert "io(url, {transports: ['websocket']})" in text
    assert "✗" not in text and text.rstrip().endswith("exit 0")


# -- how the doctor learns the transports ----------------------------------------------


def test_reachability_learns_the_transports_from_healthz_before_any_engineio_request(fake):
    fake.serve_websocket_only()
    result = reachability.check(Context(everything(), Target.parse(URL), fake))
    assert result.status == PASS
    assert result.facts.transports == served.WEBSOCKET_ONLY
    assert result.facts.transports_from == served.FROM_HEALTHZ
    assert result.data == {"transports": ["websocket"], "transports_from": "/healthz"}
    assert [m for m, _path, _h in fake.requests] == ["GET", "WEBSOCKET"]
    assert fake.requests[0][1].endswith("/healthz")


def test_reachability_learns_it_from_the_refusal_when_healthz_does_not_say(fake):
    fake.serve_websocket_only(healthz_lists_it=False)
    fake.healthz = reply(404, STOCK_NOT_FOUND, {"content-type": "text/html; charset=utf-8"})
    found = findings_of(fake, everything())
    assert found["reachability"].facts.transports == served.WEBSOCKET_ONLY
    assert found["reachability"].facts.transports_from == served.FROM_REFUSAL
    assert found["handshake"].status == SKIP and served.FROM_REFUSAL in found["handshake"].evidence
    assert len(fake.polling_requests()) == 1  # the one handshake GET that was refused
    assert {c for c, r in found.items() if r.status == FAIL} == set()


def test_transports_flag_is_taken_without_asking(fake):
    fake.serve_websocket_only(healthz_lists_it=False)
    fake.healthz = reply(404, STOCK_NOT_FOUND, {"content-type": "text/html; charset=utf-8"})
    found = findings_of(fake, everything(served.WEBSOCKET_ONLY))
    assert found["handshake"].evidence.startswith(f"{WEBSOCKET_ONLY}: transports websocket "
                                                  "per --transports")
    assert fake.polling_requests() == []
    assert {c for c, r in found.items() if r.status == FAIL} == set()


def test_server_facts_learn_the_transports_reachability_could_not(fake):
    fake.serve_websocket_only()
    ctx = Context(everything(), Target.parse(URL), fake)
    result = server.check(ctx)
    assert result.status == PASS and "transports websocket" in result.evidence
    assert result.facts.transports == served.WEBSOCKET_ONLY


def test_a_flag_the_server_contradicts_warns_and_judges_as_stated(fake):
    found = findings_of(fake, everything(served.WEBSOCKET_ONLY))  # the server polls too
    assert found["server"].status == WARN
    assert "--transports websocket says otherwise" in found["server"].evidence
    assert "SOCKETIO_TRANSPORTS=websocket" in found["server"].fix
    assert found["handshake"].status == SKIP


def test_polling_stated_for_a_websocket_only_server_fails_the_handshake_alone_for_it(fake):
    """--transports polling,websocket against a server that refuses polling: the
    handshake names the refusal; CORS does not blame the origin."""
    fake.serve_websocket_only()
    found = findings_of(fake, everything(served.BOTH))
    assert found["handshake"].status == FAIL
    assert "refuses polling, though --transports says it serves it" in \
        found["handshake"].evidence
    assert "transports: ['websocket']" in found["handshake"].fix
    assert found["cors"].status == FAIL and "FRONTEND_URLS" not in found["cors"].fix
    assert "whatever the origin" in found["cors"].evidence


# -- each check, on a WebSocket-only server ---------------------------------------------


@pytest.mark.parametrize("check", [handshake.check, sessions.check, upgrade.check])
def test_polling_checks_are_skipped_not_failed(fake, check):
    fake.serve_websocket_only()
    result = check(websocket_only_context(fake))
    assert result.status == SKIP and result.evidence.startswith(WEBSOCKET_ONLY)
    assert fake.polling_requests() == []


def test_split_sessions_tell_the_session_checks_to_run(fake):
    fake.serve_websocket_only()
    assert sessions.check(websocket_only_context(fake)).facts.split is False


def test_cors_over_websocket_fails_for_an_origin_missing_from_frontend_urls(fake):
    fake.serve_websocket_only()
    result = origins.check_allowed(websocket_only_context(fake, "https://app.example.com"))
    assert result.status == FAIL and "refused on WebSocket (400" in result.evidence
    assert "FRONTEND_URLS=https://app.example.com" in result.fix


def test_foreign_origin_over_websocket_fails_when_every_origin_is_accepted(fake):
    fake.serve_websocket_only()
    fake.echo_every_origin = True
    result = origins.check_foreign(websocket_only_context(fake))
    assert result.status == FAIL and "accepted on WebSocket" in result.evidence
    assert fake.polling_requests() == []


def test_connect_without_token_over_websocket_fails_when_accepted(fake):
    from tests.support.doctor_server import stock_connect

    fake.serve_websocket_only()
    fake.connect_answer = stock_connect
    result = auth.check_no_token(websocket_only_context(fake))
    assert result.status == FAIL and "unauthenticated sockets accepted" in result.evidence


def test_concurrency_over_websocket_fails_on_one_request_at_a_time(fake):
    fake.serve_websocket_only()
    fake.one_at_a_time = True
    result = concurrency.check(websocket_only_context(fake))
    assert result.status == FAIL and "while one WebSocket was open" in result.evidence
    assert "sync worker" in result.evidence


def test_websocket_judges_the_open_packets_ping_values(fake):
    fake.serve_websocket_only()
    fake.open_info["pingTimeout"] = 2000
    result = websocket.check(websocket_only_context(fake))
    assert result.status == WARN and "background tabs" in result.evidence
    assert result.fix.startswith("PING_TIMEOUT=60")


def test_round_trip_over_two_websockets_fails_when_neither_gets_it(fake):
    fake.serve_websocket_only()
    fake.deliver_over = {"polling"}
    result = round_trip.check(websocket_only_context(fake, user_id="alice"))
    assert result.status == FAIL
    assert "not delivered over websocket and second websocket" in result.evidence
    assert "REDIS_URL" in result.fix


def test_a_websocket_only_redirect_warns_that_websockets_do_not_follow_it(fake):
    fake.serve_websocket_only()
    fake.redirects["http://notify.example.com"] = reply(
        301, "", {"location": "https://notify.example.com/socket.io/"})
    fake.certificate = time.time() + 90 * 86400
    options = Options("http://notify.example.com", None, None, None, TIMEOUT,
                      transports=served.WEBSOCKET_ONLY)
    ctx = Context(options, Target.parse(options.url), fake,
                  Facts(transports=served.WEBSOCKET_ONLY, transports_from=served.FROM_FLAG))
    result = reachability.check(ctx)
    assert result.status == WARN and "does not follow redirects" in result.evidence
    assert "https://notify.example.com" in result.fix
    assert result.facts.target == Target.parse("https://notify.example.com")


# -- the flag ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [
    ("websocket", served.WEBSOCKET_ONLY),
    ("polling,websocket", served.BOTH),
    ("websocket, polling", served.BOTH),
])
def test_transports_flag_takes_what_socketio_transports_takes(text, parsed):
    assert parse_args([URL, "--transports", text]).transports == parsed


@pytest.mark.parametrize("text", ["polling", "ws", "websocket,smoke-signals", ""])
def test_transports_flag_refuses_what_the_server_would(text):
    with pytest.raises(UsageError, match="--transports"):
        parse_args([URL, "--transports", text])
    err = io.StringIO()
    assert main([URL, "--transports", text], out=io.StringIO(), err=err) == 2
    assert "doctor: --transports" in err.getvalue()


def test_help_names_the_transports_flag(capsys):
    assert main(["--help"]) == 0
    assert "--transports" in capsys.readouterr().out


def test_json_report_says_what_the_server_serves(fake):
    fake.serve_websocket_only()
    out = io.StringIO()
    code = main([URL, "--json", "--timeout", str(TIMEOUT), "--origin", ALLOWED], out=out,
                err=io.StringIO(), transport=fake)
    report = json.loads(out.getvalue())
    assert code == 0, report
    assert report["checks"][0]["data"] == {"transports": ["websocket"],
                                           "transports_from": "/healthz"}
