"""The real local push service (web-push-testing 1.2.2) with the server's own sender
(utils/push/sender.py), and the scripted endpoint (tests/support/push_service.py).

The facts the server relies on, proved here against the running service:

- a push sent the way the server sends it (aes128gcm, VAPID, a TTL, and
  ``Content-Type: application/octet-stream``) is decrypted by the service;
- after ``/expire-subscription/<hash>`` the next push gets 410;
- ``/subscribe`` takes form fields; a JSON body is refused.

And what happens otherwise, with pushes built by hand (``hand_built``: the same
encryption and VAPID, posted by ``requests`` so that a header can be left out):

- without the Content-Type header express never reads the body, so decryption
  fails: 400 ``{"error": {"message": "buffer.readUIntBE is not a function"}}``,
  nothing stored (as ``application/json``: 415);
- ``TTL: 0`` is accepted (the service only refuses a missing or non-numeric TTL): the
  service cannot catch a TTL of 0, so the server's own tests assert the header; with
  no TTL header at all: 400 ``TTL header is invalid: undefined``;
- VAPID is checked: a push signed with another key gets 400 ``Invalid Crypto-Key header
  sent``; one without Authorization gets 400 too (``Cannot read properties of undefined
  (reading 'substring')``: its parser crashes before its own check);
- an unknown client hash gets 400 ``Client not subscribed``, not 404 or 410.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import pytest
import requests

from tests.support.push_service import (
    PushService,
    PushServiceError,
    ScriptedEndpoint,
    VapidKeys,
    answer,
    browser_json,
    push_service_fixture,  # noqa: F401  (the push_service fixture)
    running_push_service,
    unavailable_reason,
)
from utils.push.sender import Sender, Target, encrypt
from utils.push.subscriptions import endpoint_origin

SUBJECT = "mailto:ops@example.com"
PAYLOAD = json.dumps({"id": 7, "type": "push_test", "title": "Bonjour ✓", "body": "é" * 40,
                      "data": {}, "created_at": "2026-11-30T07:00:00Z", "read_at": None,
                      "delivered_at": None})


def target(subscription: dict) -> Target:
    return Target(1, subscription["endpoint"], subscription["keys"]["p256dh"],
                  subscription["keys"]["auth"])


def server_send(subscription: dict, keys: VapidKeys, data: str = PAYLOAD, ttl: int = 60,
                **options):
    """One push as the server sends it; the sender's Answer."""
    sender = Sender(keys.private, SUBJECT, (endpoint_origin(subscription["endpoint"]),))
    return sender.send(target(subscription), data.encode(), ttl, **options)


def hand_built(subscription: dict, keys: VapidKeys, data: str = PAYLOAD,
               drop: tuple[str, ...] = (), **headers: str) -> requests.Response:
    """One push encrypted and signed as the server does it, posted with ``requests``:
    Content-Type octet-stream and TTL 60 unless ``headers`` say otherwise, the header
    names in ``drop`` left out. Its response whatever the status."""
    origin = endpoint_origin(subscription["endpoint"])
    signed = keys.vapid().sign({"sub": SUBJECT, "aud": origin})
    named = {"Content-Type": "application/octet-stream", "Content-Encoding": "aes128gcm",
             "TTL": "60", **signed, **{k.replace("_", "-"): v for k, v in headers.items()}}
    for name in drop:
        named.pop(name)
    body = encrypt(data.encode(), subscription["keys"]["p256dh"], subscription["keys"]["auth"])
    return requests.post(subscription["endpoint"], data=body, headers=named, timeout=10,
                         allow_redirects=False)


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def keys() -> VapidKeys:
    return VapidKeys.generate()


@pytest.fixture
def subscribed(push_service: PushService, keys: VapidKeys) -> dict:
    return push_service.subscribe(keys.public)


# -- the process -------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the LISTEN sockets on ``port`` (Linux /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_service_is_our_process_on_loopback_only_writing_nothing(push_service, keys,
                                                                   subscribed):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    assert listening_addresses(push_service.port) == {"0100007F"}  # 127.0.0.1, nothing else
    assert Path(os.readlink(f"/proc/{push_service.pid}/cwd")) == push_service.workdir
    assert push_service.proc.poll() is None
    assert server_send(subscribed, keys).status == 201
    push_service.expire(subscribed["clientHash"])
    # Its working directory holds only what we wrote: no .node-persist, no storage.
    assert {p.name for p in push_service.workdir.iterdir()} == {
        "loopback.cjs", "web-push-testing.log"}


def test_stop_ends_the_process_by_its_own_pid(tmp_path):
    started = running_push_service(tmp_path)
    service = next(started)
    proc, port = service.proc, service.port
    assert service.stop() == proc.returncode and proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not (tmp_path / ".node-persist").exists()
    started.close()  # the generator's own stop() finds nothing left to stop


# -- subscribe ---------------------------------------------------------------------


def test_subscribe_takes_form_fields_and_returns_a_subscription(push_service, keys):
    subscription = push_service.subscribe(keys.public)
    client_hash = subscription["clientHash"]
    assert set(subscription) == {"endpoint", "keys", "clientHash"}  # no expirationTime
    assert subscription["endpoint"] == f"{push_service.origin}/notify/{client_hash}"
    p256dh, auth = unb64url(subscription["keys"]["p256dh"]), unb64url(
        subscription["keys"]["auth"])
    assert len(p256dh) == 65 and p256dh[0] == 4 and len(auth) == 16
    assert browser_json(subscription) == {"endpoint": subscription["endpoint"],
                                          "expirationTime": None,
                                          "keys": subscription["keys"]}
    assert push_service.messages(client_hash) == []


def test_subscribe_refuses_a_json_body(push_service, keys):
    response = requests.post(push_service.url + "/subscribe", timeout=10,
                             json={"userVisibleOnly": True,
                                   "applicationServerKey": keys.public})
    assert response.status_code == 400
    assert "userVisibleOnly is not of type boolean" in response.json()["error"]["message"]


# -- the facts the server relies on ------------------------------------------------


def test_a_push_from_the_server_is_decrypted(push_service, keys, subscribed):
    answer = server_send(subscribed, keys, urgency="high", topic="t1")
    assert (answer.outcome, answer.status) == ("sent", 201)
    assert push_service.wait_for_messages(subscribed["clientHash"], 1) == [PAYLOAD]


def test_after_expiry_the_next_push_gets_410_and_is_removed(push_service, keys, subscribed):
    assert server_send(subscribed, keys).status == 201
    push_service.expire(subscribed["clientHash"])
    answer = server_send(subscribed, keys, data="after expiry")
    assert (answer.outcome, answer.status) == ("removed", 410)
    response = hand_built(subscribed, keys, data="after expiry")
    assert response.json() == {"reason": "Push subscription has unsubscribed or expired."}
    assert push_service.messages(subscribed["clientHash"]) == [PAYLOAD]  # kept, no more


def test_a_hand_built_push_is_the_servers_push(push_service, keys, subscribed):
    """The negative cases below change one thing of what hand_built() sends."""
    assert hand_built(subscribed, keys).status_code == 201
    assert push_service.wait_for_messages(subscribed["clientHash"], 1) == [PAYLOAD]


# -- without the header, without a TTL ---------------------------------------------


def test_push_as_json_is_refused_before_it_is_read(push_service, keys, subscribed):
    response = hand_built(subscribed, keys, Content_Type="application/json")
    assert response.status_code == 415
    assert "UnsupportedMediaTypeError: unsupported content encoding" in response.text
    assert push_service.messages(subscribed["clientHash"]) == []


def test_ttl_0_is_accepted_so_the_service_cannot_catch_it(push_service, keys, subscribed):
    assert hand_built(subscribed, keys, TTL="0").status_code == 201
    assert push_service.messages(subscribed["clientHash"]) == [PAYLOAD]


@pytest.mark.parametrize(("header", "message"), [
    ("Content-Type", "buffer.readUIntBE is not a function"),
    ("TTL", "TTL header is invalid: undefined"),
])
def test_push_without_content_type_or_ttl_is_refused_and_not_stored(
        push_service, keys, subscribed, header, message):
    response = hand_built(subscribed, keys, drop=(header,))
    assert response.status_code == 400
    assert response.json() == {"error": {"message": message}}
    assert push_service.messages(subscribed["clientHash"]) == []


# -- what else it checks ------------------------------------------------------------


def test_push_signed_with_another_vapid_key_is_refused(push_service, keys, subscribed):
    answer = server_send(subscribed, VapidKeys.generate())
    assert (answer.outcome, answer.status) == ("failed", 400)
    response = hand_built(subscribed, VapidKeys.generate())
    assert response.json() == {"error": {"message": "Invalid Crypto-Key header sent"}}
    assert push_service.messages(subscribed["clientHash"]) == []


def test_push_without_vapid_is_refused(push_service, keys, subscribed):
    """Refused, though by a crash of its header parser rather than its own check."""
    response = hand_built(subscribed, keys, drop=("Authorization",))
    assert response.status_code == 400
    assert response.json() == {
        "error": {"message": "Cannot read properties of undefined (reading 'substring')"}}
    assert push_service.messages(subscribed["clientHash"]) == []


def test_push_to_an_unknown_hash_gets_400_not_404(push_service, keys, subscribed):
    unknown = {**subscribed, "endpoint": f"{push_service.origin}/notify/{'0' * 64}"}
    answer = server_send(unknown, keys)
    assert (answer.outcome, answer.status) == ("failed", 400)
    response = hand_built(unknown, keys)
    assert response.json() == {"error": {"message": "Client not subscribed"}}


def test_control_requests_for_an_unknown_hash_raise(push_service):
    with pytest.raises(PushServiceError, match="400 Client not subscribed"):
        push_service.messages("f" * 64)
    with pytest.raises(PushServiceError, match="400 Subscription with specified client hash"):
        push_service.expire("f" * 64)
    assert push_service.proc.poll() is None  # its double answer there is only logged


# -- the fixture's verdict when it cannot run ----------------------------------------


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception),
                                              ("", pytest.skip.Exception)])
def test_a_missing_package_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path, ci,
                                                              outcome):
    import tests.support.push_service as module

    monkeypatch.setattr(module, "SERVER_JS", tmp_path / "absent" / "server.js")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="web-push-testing is not in node_modules"):
        next(running_push_service(tmp_path))


def test_a_missing_node_is_named(tmp_path):
    node = str(tmp_path / "no-node")
    assert unavailable_reason(node).startswith(f"{node} --version failed")


# -- the scripted endpoint -----------------------------------------------------------


def test_scripted_endpoint_answers_in_order_then_201_and_records():
    script = [answer(429, retry_after=2), 500, answer(503, retry_after="1"), 201]
    with ScriptedEndpoint(script, then=answer(410)) as endpoint, requests.Session() as http:
        got = [http.post(endpoint.endpoint(), data=f"push {i}".encode(), timeout=5,
                         headers={"TTL": "60", "Urgency": "high"}) for i in range(6)]
        received = endpoint.wait_for(6)
    assert [r.status_code for r in got] == [429, 500, 503, 201, 410, 410]
    assert got[0].headers["Retry-After"] == "2" and got[2].headers["Retry-After"] == "1"
    assert "Retry-After" not in got[1].headers
    assert [r.status for r in received] == [429, 500, 503, 201, 410, 410]
    assert [r.body for r in received] == [f"push {i}".encode() for i in range(6)]
    assert {(r.method, r.path) for r in received} == {("POST", "/push/subscription-1")}
    assert received[0].headers["ttl"] == "60" and received[0].headers["urgency"] == "high"
    assert received == sorted(received, key=lambda r: r.at)


def test_scripted_endpoint_takes_the_servers_pushes(keys):
    subscription = {"endpoint": "", "keys": {
        "p256dh": VapidKeys.generate().public,  # any P-256 point: nobody decrypts here
        "auth": base64.urlsafe_b64encode(b"a" * 16).rstrip(b"=").decode()}}
    with ScriptedEndpoint([answer(429, retry_after=3)], url_host="localhost") as endpoint:
        subscription["endpoint"] = endpoint.endpoint("/wpush/v2/abc")
        assert endpoint.origin.startswith("http://localhost:")
        first = server_send(subscription, keys, ttl=120, urgency="low", topic="t1")
        second = server_send(subscription, keys, ttl=120)
        received = endpoint.received
    assert (first.outcome, first.status, first.retry_after) == ("retry", 429, 3.0)
    assert (second.outcome, second.status) == ("sent", 201)
    assert received[0].path == "/wpush/v2/abc"
    assert received[0].headers["authorization"].startswith("vapid t=")
    assert received[0].headers["host"] == endpoint.origin.removeprefix("http://")
    assert received[0].headers["accept-encoding"] == "identity"
    assert "cookie" not in received[0].headers
    assert (received[0].headers["ttl"], received[0].headers["urgency"],
            received[0].headers["topic"]) == ("120", "low", "t1")
    assert received[0].body and received[0].body != received[1].body  # a fresh salt each


def test_scripted_endpoint_delays_an_answer():
    with ScriptedEndpoint([answer(201, delay=0.3)]) as endpoint:
        with pytest.raises(requests.Timeout):
            requests.post(endpoint.endpoint(), data=b"x", timeout=0.1)
        assert endpoint.wait_for(1)[0].status == 201
