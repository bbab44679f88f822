"""Property tests (Hypothesis) over what clients control: connect-time auth objects,
headers and query strings; REST bodies and query strings; socket event payloads.

Derandomized (a fixed seed per test) and bounded: FUZZ_EXAMPLES examples per property
(default 200), so CI runs the same cases every time. Raise it locally to dig deeper:
``FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/unit/routes/test_fuzz.py
--hypothesis-show-statistics``.
"""

from __future__ import annotations

import json
import os
import time

import jwt
import pytest
from flask_socketio import ConnectionRefusedError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.app import API_KEY, ORIGIN, SECRET, build_app
from utils.auth.access import authenticate_socket
from utils.extensions import socketio

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RAN: dict[str, int] = {}  # examples run per property, printed at the end


def ran(name: str) -> None:
    RAN[name] = RAN.get(name, 0) + 1


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    # No rate limits or event buckets here: the fuzzer is one very busy client.
    return build_app(tmp_path_factory.mktemp("fuzz"), RATE_LIMIT_HTTP="0",
                     RATE_LIMIT_API_KEY="0", CONNECT_RATE_PER_IP="0",
                     SOCKET_EVENT_BURST="100000", SOCKET_EVENT_RATE="10000")


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    """Shows, in the test run's own output, how many examples each property ran."""
    yield
    line = "Hypothesis examples run: " + ", ".join(f"{k}={v}" for k, v in RAN.items())
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(line)


# JSON-like values, deep and wide enough to reach every branch of the validators.
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=6),
    max_leaves=25,
)


def token(sub: object = "alice", exp_delta: int = 600, key: str = SECRET,
          alg: str = "HS256", **extra: object) -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + exp_delta, **extra}
    return jwt.encode(claims, key, algorithm=alg)


# Tokens near the real thing: good, expired, wrong key, odd claims, cut, mangled.
near_tokens = st.one_of(
    st.builds(token, sub=st.one_of(st.text(max_size=200), st.integers(), st.booleans(),
                                   st.none(), st.lists(st.text(), max_size=2))),
    st.builds(token, exp_delta=st.integers(min_value=-10**6, max_value=10**6)),
    st.builds(token, key=st.text(min_size=1, max_size=40)),
    st.builds(token, alg=st.sampled_from(["HS256", "HS384", "HS512"])),
    st.builds(lambda t, n: t[:n], st.builds(token), st.integers(0, 200)),
    st.builds(lambda t, s: t + s, st.builds(token), st.text(max_size=20)),
    st.text(max_size=300),
    st.from_regex(r"eyJ[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}",
                  fullmatch=True),
)
auth_objects = st.one_of(
    json_values,
    st.fixed_dictionaries({"token": st.one_of(near_tokens, json_values)},
                          optional={"last_id": json_values, "user_id": json_values}),
)
header_values = st.one_of(st.none(), near_tokens,
                          st.builds(lambda t: f"Bearer {t}", near_tokens),
                          st.builds(lambda s, t: f"{s} {t}", st.text(max_size=10), near_tokens),
                          st.text(max_size=100))
query_strings = st.one_of(
    st.none(), st.text(max_size=200),
    st.builds(lambda t: f"token={t}", near_tokens),
    st.builds(lambda t, n: "&".join([f"token={t}"] * n), near_tokens, st.integers(1, 150)),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=20), st.text(max_size=50)),
)


def test_connect_auth_only_admits_or_refuses(fuzz_app):
    @FUZZ
    @given(auth=auth_objects, header=header_values, query=query_strings)
    def prop(auth, header, query):
        ran("connect_auth")
        environ = {}
        if header is not None:
            environ["HTTP_AUTHORIZATION"] = header
        if query is not None:
            environ["QUERY_STRING"] = query
        with fuzz_app.app_context():
            try:
                verified = authenticate_socket(auth, environ)
            except ConnectionRefusedError as exc:
                assert exc.error_args["message"] == "unauthorized"
                assert exc.error_args["data"]["code"] in (
                    "token_missing", "token_invalid", "token_expired")
                return
        assert isinstance(verified.user_id, str) and verified.user_id

    prop()


def test_connect_handler_never_crashes_over_the_test_client(fuzz_app):
    """The same inputs through Flask-SocketIO's connect path: admitted or refused."""
    @settings(FUZZ, max_examples=max(EXAMPLES // 3, 10))
    @given(auth=auth_objects, query=st.one_of(st.none(), st.text(max_size=100)))
    def prop(auth, query):
        if isinstance(auth, (int, float)):
            # Socket.IO's packet format reads a bare number's leading digits as an ack
            # id, so no client can send one as a CONNECT payload (the real-server test
            # sends such packets raw).
            return
        ran("connect_handler")
        client = socketio.test_client(fuzz_app, auth=auth, headers={"Origin": ORIGIN},
                                      query_string=query)
        if client.is_connected():
            names = [m["name"] for m in client.get_received()]
            assert names[0] == "auth_success"
            client.disconnect()

    prop()


def assert_contract_error(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    assert b"Traceback" not in response.data


producer_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": json_values, "title": json_values},
        optional={"user_id": json_values, "user_ids": json_values, "body": json_values,
                  "data": json_values},
    ),
    st.fixed_dictionaries({
        "user_id": st.one_of(st.text(min_size=1, max_size=130), st.integers()),
        "type": st.text(max_size=70), "title": st.text(max_size=210),
        "body": st.one_of(st.none(), st.text(max_size=50)),
        "data": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    }),
)


def test_producer_validation_is_201_or_a_contract_4xx(fuzz_app):
    client = fuzz_app.test_client()
    headers = {"Authorization": f"Bearer {API_KEY}"}

    @FUZZ
    @given(body=producer_bodies, key=st.one_of(st.none(), st.text(
        st.characters(blacklist_categories=("Cc", "Cs")), max_size=300)))
    def prop(body, key):
        ran("producer_json")
        sent = dict(headers)
        if key is not None:
            sent["Idempotency-Key"] = key.encode("utf-8", "replace").decode("latin-1")
        try:
            raw = json.dumps(body, allow_nan=True)
        except (ValueError, TypeError):
            return
        response = client.post("/api/notifications", data=raw,
                               headers={**sent, "Content-Type": "application/json"})
        if response.status_code == 201:
            assert all(isinstance(n["id"], int) for n in response.get_json()["notifications"])
        else:
            assert_contract_error(response)

    prop()


def test_raw_bodies_are_a_contract_4xx(fuzz_app):
    client = fuzz_app.test_client()

    @FUZZ
    @given(data=st.binary(max_size=300),
           content_type=st.one_of(st.just("application/json"), st.text(
               st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)))
    def prop(data, content_type):
        ran("producer_raw")
        response = client.post("/api/notifications", data=data, headers={
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": content_type.encode("utf-8", "replace").decode("latin-1")})
        if response.status_code != 201:
            assert_contract_error(response)

    prop()


def test_inbox_queries_and_reads_are_200_or_a_contract_4xx(fuzz_app):
    client = fuzz_app.test_client()
    with fuzz_app.app_context():
        from utils.auth.tokens import create_access_token

        auth = {"Authorization": f"Bearer {create_access_token('fuzz-user', 3600)}"}

    @FUZZ
    @given(params=st.dictionaries(st.sampled_from(["limit", "before", "unread", "x"]),
                                  st.text(max_size=30), max_size=4),
           body=json_values)
    def prop(params, body):
        ran("inbox")
        listing = client.get("/api/notifications", query_string=params, headers=auth)
        if listing.status_code != 200:
            assert_contract_error(listing)
        marked = client.post("/api/notifications/read", json=body, headers=auth)
        if marked.status_code != 200:
            assert_contract_error(marked)

    prop()


event_names = st.one_of(st.sampled_from(["mark_read", "sync"]), st.text(min_size=1,
                                                                         max_size=30))


def test_socket_events_get_an_ack_and_keep_the_socket(fuzz_app):
    with fuzz_app.app_context():
        from utils.auth.tokens import create_access_token

        user_token = create_access_token("fuzz-socket", 3600)
    client = socketio.test_client(fuzz_app, auth={"token": user_token},
                                  headers={"Origin": ORIGIN})
    assert client.is_connected()

    @FUZZ
    @given(event=event_names, args=st.lists(json_values, max_size=3))
    def prop(event, args):
        ran("socket_events")
        if event in ("connect", "disconnect", "message", "json"):
            return  # reserved names the client library refuses to emit
        ack = client.emit(event, *args, callback=True)
        assert client.is_connected(), (event, args)
        assert isinstance(ack, dict), (event, args, ack)
        if "error" in ack:
            assert set(ack["error"]) == {"code", "message"}
            assert "Traceback" not in ack["error"]["message"]
        elif event == "mark_read":
            assert set(ack) == {"updated", "unread_count"}
        elif event == "sync":
            assert set(ack) == {"notifications", "has_more"}

    prop()
    client.disconnect()
