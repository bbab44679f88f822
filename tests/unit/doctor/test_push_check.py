"""The doctor's Web Push check (utils/doctor/checks/push.py), driven by answers of
``GET /api/push/config`` recorded from this backend (the Flask app of issue 14, in
development with generated VAPID keys and in production without them, and a route it
does not have), without any server: pass, warn and fail."""

from __future__ import annotations

import base64
import io
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.doctor_server import (
    JSON_TYPE,
    STOCK_NOT_FOUND,
    RecordedServer,
    reply,
)
from utils.doctor import main
from utils.doctor.checks import CHECKS, push, run_checks
from utils.doctor.model import FAIL, PASS, WARN, Context, Options
from utils.doctor.report import exit_code, render_table
from utils.doctor.target import Target
from utils.doctor.transport import ProbeError, ProbeTimeout, Reply

URL = "http://127.0.0.1:8000"
ALLOWED = "http://localhost:3000"
TIMEOUT = 0.5

# Recorded: APP_ENV=development (keys generated into instance/), then production
# without VAPID_PRIVATE_KEY, then a path under /api/push that has no route.
PUBLIC_KEY = ("BAQ2gvav_cPJmBMJcVR6DTY5Zd0erpjbalf4q782-gAw4XjN6qvPYGFFj_CQtgXN3WypBuTFweLI"
              "KAd82fejoyI")
CONFIG_ON = f'{{"enabled":true,"vapid_public_key":"{PUBLIC_KEY}"}}\n'
CONFIG_OFF = '{"enabled":false,"vapid_public_key":null}\n'
NOT_FOUND = ('{"error":{"code":"not_found","message":"The requested URL was not found on the '
             'server. If you entered the URL manually please check your spelling and try '
             'again."}}\n')
HTML_TYPE = {"content-type": "text/html; charset=utf-8"}


class PushConfigServer(RecordedServer):
    """The recorded server, answering GET /api/push/config with ``push_config``."""

    def __init__(self) -> None:
        super().__init__()
        self.push_config: Reply | ProbeError = reply(200, CONFIG_ON, JSON_TYPE)

    def request(self, target: Target, method: str, path: str,
                headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 5.0) -> Reply:
        if path.endswith(push.PATH):
            self.requests.append((method, path, headers or {}))
            if isinstance(self.push_config, ProbeError):
                raise self.push_config
            return self.push_config
        return super().request(target, method, path, headers, body, timeout)


@pytest.fixture
def fake() -> PushConfigServer:
    return PushConfigServer()


def context(fake: RecordedServer, url: str = URL) -> Context:
    return Context(Options(url, ALLOWED, None, None, TIMEOUT), Target.parse(url), fake)


def config(body: object, status: int = 200) -> Reply:
    return reply(status, json.dumps(body), JSON_TYPE)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def point(key: ec.EllipticCurvePrivateKey, form=serialization.PublicFormat.UncompressedPoint
          ) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, form)


# -- pass ------------------------------------------------------------------------------


def test_push_passes_when_enabled_with_a_valid_key(fake):
    result = push.check(context(fake))
    assert result.status == PASS
    assert result.evidence == (f"enabled; VAPID public key {PUBLIC_KEY[:8]}…{PUBLIC_KEY[-4:]}"
                               " (a 65-byte P-256 point)")
    assert result.data == json.loads(CONFIG_ON)
    assert fake.requests == [("GET", "/api/push/config", {})]


def test_push_asks_under_the_urls_path_prefix(fake):
    push.check(context(fake, URL + "/notify/"))
    assert fake.requests[0][1] == "/notify/api/push/config"


# -- warn ------------------------------------------------------------------------------


def test_push_warns_when_off_and_says_how_to_turn_it_on(fake):
    fake.push_config = reply(200, CONFIG_OFF, JSON_TYPE)
    result = push.check(context(fake))
    assert result.status == WARN and "Web Push is off (enabled false)" in result.evidence
    assert "set VAPID_PRIVATE_KEY and VAPID_SUBJECT" in result.fix
    assert "`flask --app app vapid-keys` prints a pair" in result.fix
    assert result.data == {"enabled": False, "vapid_public_key": None}


# -- fail: the route -------------------------------------------------------------------


@pytest.mark.parametrize("answer", [reply(404, NOT_FOUND, JSON_TYPE),  # before issue 14
                                    reply(404, STOCK_NOT_FOUND, HTML_TYPE)])  # another app
def test_push_fails_when_the_route_is_missing(fake, answer):
    fake.push_config = answer
    result = push.check(context(fake))
    assert result.status == FAIL
    assert result.evidence.startswith("GET /api/push/config answered 404: no Web Push")
    assert result.fix == push.ROUTE_FIX


def test_push_fails_naming_the_error_code_of_another_status(fake):
    fake.push_config = config({"error": {"code": "unavailable", "message": "…"}}, 503)
    result = push.check(context(fake))
    assert result.status == FAIL
    assert result.evidence == "GET /api/push/config answered 503 unavailable"


@pytest.mark.parametrize("error", [ProbeTimeout("GET /api/push/config: no answer within "
                                                "0.5 s"), ProbeError("connection reset")])
def test_push_fails_when_the_request_gets_no_answer(fake, error):
    fake.push_config = error
    result = push.check(context(fake))
    assert result.status == FAIL and str(error) in result.evidence


@pytest.mark.parametrize(("answer", "words"), [
    (reply(200, "<html>proxy login</html>", HTML_TYPE), "a body that is not JSON"),
    (reply(200, '{"enabled": true, "vapid', JSON_TYPE), "a body that is not JSON"),
    (config([True, PUBLIC_KEY]), "JSON list"),
    (config({"vapid_public_key": PUBLIC_KEY}), 'no boolean "enabled"'),
    (config({"enabled": "true", "vapid_public_key": PUBLIC_KEY}), 'no boolean "enabled"'),
])
def test_push_fails_on_malformed_json(fake, answer, words):
    fake.push_config = answer
    result = push.check(context(fake))
    assert result.status == FAIL
    assert result.evidence.startswith(f"GET /api/push/config answered 200 with {words}, not")


# -- fail: the key ---------------------------------------------------------------------


KEY = ec.generate_private_key(ec.SECP256R1())
RAW = point(KEY)
OFF_CURVE = RAW[:-1] + bytes([RAW[-1] ^ 1])


@pytest.mark.parametrize(("key", "words"), [
    (None, "is missing"),
    (12345, "is a JSON int, not a string"),
    (base64.b64encode(b"\xfb\xff" + RAW[2:]).decode(), "is not base64url"),  # + and /
    ("B" * 85, "is not base64url"),  # a length no base64 has
    (b64url(RAW[:64]), "is 64 bytes, not 65"),
    (b64url(point(KEY, serialization.PublicFormat.CompressedPoint)), "is 33 bytes, not 65"),
    (b64url(b"\x03" + RAW[1:]), "starts with 0x03, not 0x04 (an uncompressed point)"),
    (b64url(OFF_CURVE), "is not a point on P-256"),
    (b64url(b"\x04" + (push.P + 1).to_bytes(32, "big") + RAW[33:]), "is not a point on P-256"),
    (b64url(point(ec.generate_private_key(ec.SECP384R1()))), "is 97 bytes, not 65"),
])
def test_push_fails_when_enabled_with_a_bad_key(fake, key, words):
    fake.push_config = config({"enabled": True, "vapid_public_key": key})
    result = push.check(context(fake))
    assert result.status == FAIL
    assert result.evidence == (f"enabled, but vapid_public_key {words}: browsers refuse it "
                               "as applicationServerKey")
    assert result.fix == push.KEY_FIX


def test_key_check_accepts_every_p256_point_and_nothing_off_the_curve():
    for _ in range(50):
        raw = point(ec.generate_private_key(ec.SECP256R1()))
        assert push.key_problem(b64url(raw)) is None
        assert push.key_problem(b64url(raw) + "=" * (-len(b64url(raw)) % 4)) is None  # padded
        y = int.from_bytes(raw[33:], "big")
        moved = raw[:33] + ((y + 1) % push.P).to_bytes(32, "big")
        assert push.key_problem(b64url(moved)) == "is not a point on P-256"


# -- in the run ------------------------------------------------------------------------


def test_push_runs_right_after_the_server_facts(fake):
    ids = [c.id for c in CHECKS]
    assert ids.index("push") == ids.index("server") + 1
    findings, _target = run_checks(Options(URL, ALLOWED, None, None, TIMEOUT), fake)
    found = {f.id: f for f in findings}
    assert found["push"].status == PASS and found["push"].title == "web push"


def test_push_off_leaves_the_exit_status_0_and_prints_the_fix(fake):
    fake.push_config = reply(200, CONFIG_OFF, JSON_TYPE)
    findings, _target = run_checks(Options(URL, ALLOWED, None, None, TIMEOUT), fake)
    assert exit_code(findings) == 0
    text = render_table(Options(URL), findings, colour=False)
    assert "⚠ web push" in text and "fix: to push to sleeping phones, set VAPID_PRIVATE_KEY" \
        in text


def test_push_missing_fails_the_run_and_is_reported_in_json(fake):
    fake.push_config = reply(404, NOT_FOUND, JSON_TYPE)
    out = io.StringIO()
    code = main([URL, "--json", "--timeout", str(TIMEOUT)], out=out, err=io.StringIO(),
                transport=fake)
    report = json.loads(out.getvalue())
    found = {c["id"]: c for c in report["checks"]}
    assert code == 1 and report["verdict"] == FAIL
    assert found["push"]["status"] == FAIL and found["push"]["fix"] == push.ROUTE_FIX
