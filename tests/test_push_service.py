"""The real local push service (web-push-testing 1.2.2) with pywebpush 2.5.0, and the
scripted endpoint, as issue 14's tests will use them (tests/support/push_service.py).

The facts the issue states, proved here against the running service:

- a push sent the way the server sends it (aes128gcm, VAPID, a TTL, and
  ``Content-Type: application/octet-stream``) is decrypted by the service;
- after ``/expire-subscription/<hash>`` the next push gets 410;
- ``/subscribe`` takes form fields; a JSON body is refused.

And what happens otherwise:

- without the Content-Type header (pywebpush sends none unless asked) express never
  reads the body, so decryption fails: 400 ``{"error": {"message": "buffer.readUIntBE
  is not a function"}}``, nothing stored (as ``application/json``: 415);
- pywebpush without ``ttl=`` sends ``TTL: 0``, which the service accepts (it only
  refuses a missing or non-numeric TTL): the service cannot catch a TTL of 0, so the
  server's own tests must assert the header; with no TTL header at all: 400
  ``TTL header is invalid: undefined``;
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
from pywebpush import WebPushException, webpush

from tests.support.push_service import (
    OCTET_STREAM,
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

SUBJECT = "mailto:ops@example.com"
PAYLOAD = json.dumps({"id": 7, "type": "push_test", "title": "Bonjour ✓", "body": "é" * 40,
                      "data": {}, "created_at": "2026-11-30T07:00:00Z", "read_at": None,
                      "delivered_at": None})


class RecordingSession(requests.Session):
    """What pywebpush posts, recorded; the headers named in ``drop`` removed first."""

    def __init__(self, drop: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.drop = drop
        self.sent: list[dict[str, str]] = []

    def post(self, url, data=None, json=None, **kwargs):
        headers = kwargs["headers"]
        for name in self.drop:
            headers.pop(name, None)
        self.sent.append({k.lower(): v for k, v in headers.items()})
        return super().post(url, data=data, json=json, **kwargs)


def send(subscription: dict, keys: VapidKeys, data: str = PAYLOAD,
         session: requests.Session | None = None, **options) -> requests.Response:
    """One push with pywebpush; its response whatever the status."""
    try:
        return webpush(browser_json(subscription), data=data, vapid_private_key=keys.vapid(),
                       vapid_claims={"sub": SUBJECT}, content_encoding="aes128gcm",
                       timeout=10, requests_session=session, **options)
    except WebPushException as exc:
        assert exc.response is not None, exc
        return exc.response


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
    assert send(subscribed, keys, ttl=60, headers=OCTET_STREAM).status_code == 201
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


# -- the two facts the issue relies on ---------------------------------------------


def test_push_with_octet_stream_and_a_ttl_is_decrypted(push_service, keys, subscribed):
    response = send(subscribed, keys, ttl=60, headers=OCTET_STREAM)
    assert response.status_code == 201, response.text
    assert push_service.wait_for_messages(subscribed["clientHash"], 1) == [PAYLOAD]


def test_after_expiry_the_next_push_gets_410(push_service, keys, subscribed):
    assert send(subscribed, keys, ttl=60, headers=OCTET_STREAM).status_code == 201
    push_service.expire(subscribed["clientHash"])
    response = send(subscribed, keys, data="after expiry", ttl=60, headers=OCTET_STREAM)
    assert response.status_code == 410
    assert response.json() == {"reason": "Push subscription has unsubscribed or expired."}
    assert push_service.messages(subscribed["clientHash"]) == [PAYLOAD]  # kept, no more


# -- without the header, without a TTL ---------------------------------------------


def test_push_without_content_type_is_refused_and_not_stored(push_service, keys, subscribed):
    session = RecordingSession()
    response = send(subscribed, keys, ttl=60, session=session)
    assert "content-type" not in session.sent[0]  # pywebpush sends none unless asked
    assert session.sent[0]["content-encoding"] == "aes128gcm"
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "buffer.readUIntBE is not a function"}}
    assert push_service.messages(subscribed["clientHash"]) == []


def test_push_as_json_is_refused_before_it_is_read(push_service, keys, subscribed):
    response = send(subscribed, keys, ttl=60, headers={"Content-Type": "application/json"})
    assert response.status_code == 415
    assert "UnsupportedMediaTypeError: unsupported content encoding" in response.text
    assert push_service.messages(subscribed["clientHash"]) == []


def test_pywebpush_sends_ttl_0_by_default_and_the_service_accepts_it(push_service, keys,
                                                                      subscribed):
    session = RecordingSession()
    response = send(subscribed, keys, session=session, headers=OCTET_STREAM)
    assert session.sent[0]["ttl"] == "0"
    assert response.status_code == 201
    assert push_service.messages(subscribed["clientHash"]) == [PAYLOAD]


def test_push_without_a_ttl_header_is_refused(push_service, keys, subscribed):
    session = RecordingSession(drop=("ttl",))
    response = send(subscribed, keys, ttl=60, session=session, headers=OCTET_STREAM)
    assert "ttl" not in session.sent[0]
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "TTL header is invalid: undefined"}}
    assert push_service.messages(subscribed["clientHash"]) == []


# -- what else it checks ------------------------------------------------------------


def test_push_signed_with_another_vapid_key_is_refused(push_service, keys, subscribed):
    response = send(subscribed, VapidKeys.generate(), ttl=60, headers=OCTET_STREAM)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "Invalid Crypto-Key header sent"}}
    assert push_service.messages(subscribed["clientHash"]) == []


def test_push_without_vapid_is_refused(push_service, keys, subscribed):
    """Refused, though by a crash of its header parser rather than its own check."""
    session = RecordingSession(drop=("authorization",))
    response = send(subscribed, keys, ttl=60, session=session, headers=OCTET_STREAM)
    assert "authorization" not in session.sent[0]
    assert response.status_code == 400
    assert response.json() == {
        "error": {"message": "Cannot read properties of undefined (reading 'substring')"}}
    assert push_service.messages(subscribed["clientHash"]) == []


def test_push_to_an_unknown_hash_gets_400_not_404(push_service, keys, subscribed):
    unknown = {**subscribed, "endpoint": f"{push_service.origin}/notify/{'0' * 64}"}
    response = send(unknown, keys, ttl=60, headers=OCTET_STREAM)
    assert response.status_code == 400
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


def test_scripted_endpoint_takes_pywebpush_pushes(keys):
    subscription = {"endpoint": "", "keys": {
        "p256dh": VapidKeys.generate().public,  # any P-256 point: nobody decrypts here
        "auth": base64.urlsafe_b64encode(b"a" * 16).rstrip(b"=").decode()}}
    with ScriptedEndpoint([answer(429, retry_after=3)], url_host="localhost") as endpoint:
        subscription["endpoint"] = endpoint.endpoint("/wpush/v2/abc")
        assert endpoint.origin.startswith("http://localhost:")
        first = send(subscription, keys, ttl=120, headers={"Urgency": "low", "Topic": "t1"})
        second = send(subscription, keys, ttl=120)
        received = endpoint.received
    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert second.status_code == 201
    assert received[0].path == "/wpush/v2/abc"
    assert received[0].headers["authorization"].startswith("vapid t=")
    assert (received[0].headers["ttl"], received[0].headers["urgency"],
            received[0].headers["topic"]) == ("120", "low", "t1")
    assert received[0].body and received[0].body != received[1].body  # a fresh salt each


def test_scripted_endpoint_delays_an_answer():
    with ScriptedEndpoint([answer(201, delay=0.3)]) as endpoint:
        with pytest.raises(requests.Timeout):
            requests.post(endpoint.endpoint(), data=b"x", timeout=0.1)
        assert endpoint.wait_for(1)[0].status == 201
