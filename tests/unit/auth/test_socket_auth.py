"""Connect-time authentication: token sources, precedence and refusal codes.

Flask-SocketIO's test client shows whether a socket was admitted; the refusal codes
are asserted on ``authenticate_socket`` itself, and over the wire by the real-server
tests, because the test client drops CONNECT_ERROR data.
"""

import time

import jwt
import pytest
from flask_socketio import ConnectionRefusedError

from tests.support.app import SECRET
from utils.auth.access import authenticate_socket, extract_token


def refusal_code(app, auth=None, environ=None):
    with app.app_context():
        with pytest.raises(ConnectionRefusedError) as excinfo:
            authenticate_socket(auth, environ or {})
    message, data = excinfo.value.error_args["message"], excinfo.value.error_args["data"]
    assert message == "unauthorized"
    return data["code"]


def received(test_client, name):
    return [m["args"][0] for m in test_client.get_received() if m["name"] == name]


def test_auth_token_admits_and_joins_the_user_room(app, sio_client, make_token, notify):
    alice = sio_client(auth={"token": make_token("alice")})
    assert alice.is_connected()
    welcome = received(alice, "auth_success")
    assert welcome == [{"user_id": "alice", "unread_count": 0}]
    notify("alice", title="for alice")
    assert [n["title"] for n in received(alice, "notification")] == ["for alice"]


def test_authorization_header_admits(sio_client, make_token):
    client = sio_client(headers={"Authorization": f"Bearer {make_token('bob')}"})
    assert received(client, "auth_success")[0]["user_id"] == "bob"


def test_query_token_admits(sio_client, make_token):
    client = sio_client(query_string=f"token={make_token('carol')}")
    assert received(client, "auth_success")[0]["user_id"] == "carol"


def test_auth_token_wins_over_header_and_query(sio_client, make_token):
    client = sio_client(
        auth={"token": make_token("from-auth")},
        headers={"Authorization": f"Bearer {make_token('from-header')}"},
        query_string=f"token={make_token('from-query')}",
    )
    assert received(client, "auth_success")[0]["user_id"] == "from-auth"


def test_header_wins_over_query(sio_client, make_token):
    client = sio_client(headers={"Authorization": f"Bearer {make_token('from-header')}"},
                        query_string=f"token={make_token('from-query')}")
    assert received(client, "auth_success")[0]["user_id"] == "from-header"


def test_user_id_sent_by_the_client_is_ignored(sio_client, make_token):
    client = sio_client(auth={"token": make_token("alice"), "user_id": "mallory"},
                        query_string="user_id=mallory")
    assert received(client, "auth_success")[0]["user_id"] == "alice"


def test_notifications_reach_only_their_user(sio_client, make_token, notify):
    alice = sio_client(auth={"token": make_token("alice")})
    bob = sio_client(auth={"token": make_token("bob")})
    alice.get_received(), bob.get_received()
    notify("bob", title="bob only")
    assert received(alice, "notification") == []
    assert [n["title"] for n in received(bob, "notification")] == ["bob only"]


def test_auth_success_counts_unread_from_the_store(sio_client, make_token, notify):
    notify("dave")
    notify("dave")
    notify("erin")
    client = sio_client(auth={"token": make_token("dave")})
    assert received(client, "auth_success")[0]["unread_count"] == 2


def expired_token():
    now = int(time.time())
    return jwt.encode({"sub": "alice", "iat": now - 3600, "exp": now - 600}, SECRET,
                      algorithm="HS256")


@pytest.mark.parametrize("auth, environ, code", [
    (None, {}, "token_missing"),
    ({}, {}, "token_missing"),
    ({"token": ""}, {}, "token_missing"),
    ({"token": None}, {"HTTP_AUTHORIZATION": "Basic abc"}, "token_missing"),
    ({"token": "garbage"}, {}, "token_invalid"),
    ({"token": 12345}, {}, "token_invalid"),
    ({"token": ["a"]}, {}, "token_invalid"),
    (None, {"HTTP_AUTHORIZATION": "Bearer garbage"}, "token_invalid"),
    (None, {"QUERY_STRING": "token=garbage"}, "token_invalid"),
    ({"token": "EXPIRED"}, {}, "token_expired"),
    (None, {"HTTP_AUTHORIZATION": "Bearer EXPIRED"}, "token_expired"),
    (None, {"QUERY_STRING": "token=EXPIRED"}, "token_expired"),
])
def test_refusal_codes(app, auth, environ, code):
    expired = expired_token()
    if isinstance(auth, dict) and auth.get("token") == "EXPIRED":
        auth = {"token": expired}
    environ = {k: v.replace("EXPIRED", expired) for k, v in environ.items()}
    assert refusal_code(app, auth, environ) == code


def test_wrong_key_and_wrong_algorithm_are_invalid(app):
    now = int(time.time())
    claims = {"sub": "alice", "exp": now + 60}
    forged = jwt.encode(claims, "not-the-secret-" + "x" * 30, algorithm="HS256")
    assert refusal_code(app, {"token": forged}) == "token_invalid"
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert refusal_code(app, {"token": unsigned}) == "token_invalid"
    other_alg = jwt.encode(claims, SECRET, algorithm="HS384")
    assert refusal_code(app, {"token": other_alg}) == "token_invalid"


@pytest.mark.parametrize("auth", [
    # (A bare number is left out: Socket.IO's packet format reads leading digits
    # as an ack id, so no client can send one as a CONNECT payload.)
    "a-string", True, ["token", "x"], None, {"token": 3.14}, {"token": True},
    {"token": {"nested": {"deeper": ["x"] * 50}}},
    {"token": "x" * 100_000},
    {"last_id": "abc"},
    {f"k{i}": i for i in range(5000)},
])
def test_any_auth_value_is_refused_not_crashed(sio_client, auth):
    client = sio_client(auth=auth)
    assert not client.is_connected()


def test_refused_sockets_receive_nothing(sio_client):
    client = sio_client(auth={"token": "bad"})
    assert not client.is_connected()


def test_extract_token_ignores_other_schemes_and_empty_values():
    assert extract_token(None, {"HTTP_AUTHORIZATION": "Basic dXNlcg=="}) is None
    assert extract_token(None, {"QUERY_STRING": "token="}) is None
    assert extract_token({"token": None}, {"QUERY_STRING": "a=1&token=t"}) == "t"
