"""Key rotation: several secrets, kid selection, and a JWKS document served on
loopback by the test itself (fetch, cache, rollover, timeout, key confusion)."""

from __future__ import annotations

import json
import time
import types
from http.server import BaseHTTPRequestHandler

import jwt
import jwt.api_jwk
import jwt.jwk_set_cache
import jwt.jwks_client
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.loopback_http import LoopbackServer
from utils.auth.tokens import TokenError, TokenService
from utils.config.settings import ConfigError, load_settings

OLD = "old-secret-" + "o" * 40
NEW = "new-secret-" + "n" * 40
ORIGIN = "http://localhost:3000"


def service(tmp_path, **env) -> TokenService:
    return TokenService(load_settings({"FRONTEND_URLS": ORIGIN, **env}, tmp_path))


def claims(user="alice", ttl=60):
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + ttl}


def code_of(tokens: TokenService, token: str) -> str:
    with pytest.raises(TokenError) as excinfo:
        tokens.verify(token)
    return excinfo.value.code


# ---------------------------------------------------------------- shared secrets

def test_rotation_previous_key_still_verifies_and_new_key_signs(tmp_path):
    before = service(tmp_path, JWT_SECRET_KEY=OLD)
    issued_before = before.create("alice")
    during = service(tmp_path, JWT_SECRET_KEY=f"{NEW},{OLD}")
    assert during.verify(issued_before).user_id == "alice"
    issued_during = during.create("bob")
    assert jwt.decode(issued_during, NEW, algorithms=["HS256"])["sub"] == "bob"
    after = service(tmp_path, JWT_SECRET_KEY=NEW)
    assert code_of(after, issued_before) == "token_invalid"
    assert after.verify(issued_during).user_id == "bob"


def test_kid_entries_sign_with_the_first_kid_and_select_by_header(tmp_path):
    tokens = service(tmp_path, JWT_SECRET_KEY=f"k2:{NEW},k1:{OLD}")
    minted = tokens.create("alice")
    assert jwt.get_unverified_header(minted)["kid"] == "k2"
    assert tokens.verify(minted).user_id == "alice"
    by_k1 = jwt.encode(claims(), OLD, algorithm="HS256", headers={"kid": "k1"})
    assert tokens.verify(by_k1).user_id == "alice"


def test_kid_pins_the_key_a_token_may_use(tmp_path):
    """A token naming k1 but signed with k2's secret is refused: the kid selects one
    key, it does not widen the search."""
    tokens = service(tmp_path, JWT_SECRET_KEY=f"k2:{NEW},k1:{OLD}")
    mislabelled = jwt.encode(claims(), NEW, algorithm="HS256", headers={"kid": "k1"})
    assert code_of(tokens, mislabelled) == "token_invalid"


def test_duplicate_kids_refuse_to_start(tmp_path):
    with pytest.raises(ConfigError, match="kid"):
        load_settings({"JWT_SECRET_KEY": f"a:{NEW},a:{OLD}"}, tmp_path)


def test_secrets_are_redacted_without_their_kid(tmp_path):
    settings = load_settings({"JWT_SECRET_KEY": f"k2:{NEW},k1:{OLD}"}, tmp_path)
    assert NEW in settings.secrets_to_redact() and OLD in settings.secrets_to_redact()


# ---------------------------------------------------------------- JWKS on loopback

def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private, kid: str) -> dict:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


class JwksServer(LoopbackServer):
    """A JWKS endpoint on a free loopback port; ``keys`` may be swapped at any time."""

    def __init__(self, delay: float = 0.0) -> None:
        self.keys: list[dict] = []
        self.fetches = 0
        self.delay = delay
        super().__init__()
        self.url = self.origin + "/.well-known/jwks.json"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                owner.fetches += 1
                if owner.delay:
                    time.sleep(owner.delay)
                body = json.dumps({"keys": owner.keys}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (the timeout test): nothing to report

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def clock(monkeypatch):
    """PyJWKClient's cache, timestamps and cooldown read time.monotonic; the test
    moves it instead of sleeping."""
    now = [1000.0]
    fake = types.SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    monkeypatch.setattr(jwt.jwk_set_cache, "time", fake)
    monkeypatch.setattr(jwt.api_jwk, "time", fake)
    monkeypatch.setattr(jwt.jwks_client, "time", fake)
    return now


def signed(private, kid: str, **extra) -> str:
    return jwt.encode({**claims(), **extra}, private, algorithm="RS256", headers={"kid": kid})


def jwks_service(tmp_path, url: str, **env) -> TokenService:
    return service(tmp_path, JWT_JWKS_URL=url, JWT_JWKS_CACHE_SECONDS="60",
                   JWT_JWKS_COOLDOWN="5", **env)


def test_jwks_verifies_by_kid_and_caches_the_set(tmp_path, clock):
    k1 = rsa_key()
    with JwksServer() as server:
        server.keys = [public_jwk(k1, "k1")]
        tokens = jwks_service(tmp_path, server.url)
        for _ in range(5):
            assert tokens.verify(signed(k1, "k1")).user_id == "alice"
        assert server.fetches == 1


def test_jwks_key_rollover(tmp_path, clock):
    """A new kid appears (found by one forced refresh), then the old one is withdrawn
    (gone once the cached set expires)."""
    k1, k2 = rsa_key(), rsa_key()
    with JwksServer() as server:
        server.keys = [public_jwk(k1, "k1")]
        tokens = jwks_service(tmp_path, server.url)
        assert tokens.verify(signed(k1, "k1")).user_id == "alice"

        server.keys = [public_jwk(k1, "k1"), public_jwk(k2, "k2")]
        clock[0] += 6  # past the cooldown, inside the cache lifespan
        assert tokens.verify(signed(k2, "k2")).user_id == "alice"
        assert server.fetches == 2

        server.keys = [public_jwk(k2, "k2")]
        clock[0] += 61  # the cached set expires
        assert code_of(tokens, signed(k1, "k1")) == "token_invalid"
        assert tokens.verify(signed(k2, "k2")).user_id == "alice"


def test_unknown_kids_cannot_hammer_the_provider(tmp_path, clock):
    k1, stranger = rsa_key(), rsa_key()
    with JwksServer() as server:
        server.keys = [public_jwk(k1, "k1")]
        tokens = jwks_service(tmp_path, server.url)
        tokens.verify(signed(k1, "k1"))
        for i in range(50):
            assert code_of(tokens, signed(stranger, f"made-up-{i}")) == "token_invalid"
        assert server.fetches == 1  # the cooldown holds further refreshes back


def test_jwks_fetch_is_bounded_by_the_timeout(tmp_path, clock):
    k1 = rsa_key()
    with JwksServer(delay=3) as server:
        server.keys = [public_jwk(k1, "k1")]
        tokens = jwks_service(tmp_path, server.url, JWT_JWKS_TIMEOUT="0.3")
        started = time.monotonic()
        assert code_of(tokens, signed(k1, "k1")) == "token_invalid"
        assert time.monotonic() - started < 2


def test_jwks_refuses_an_unreachable_provider_cleanly(tmp_path, clock):
    k1 = rsa_key()
    with JwksServer() as server:
        url = server.url
    tokens = jwks_service(tmp_path, url)  # nothing listens there any more
    assert code_of(tokens, signed(k1, "k1")) == "token_invalid"


def test_jwks_with_hs_algorithms_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="HS"):
        load_settings({"JWT_JWKS_URL": "http://127.0.0.1:9/jwks", "JWT_ALGORITHMS": "HS256",
                       "FRONTEND_URLS": ORIGIN}, tmp_path)


def test_jwks_url_must_be_http(tmp_path):
    with pytest.raises(ConfigError, match="JWT_JWKS_URL"):
        load_settings({"JWT_JWKS_URL": "file:///etc/passwd"}, tmp_path)


# ---------------------------------------------------------------- algorithm confusion

def test_hs256_signed_with_the_public_key_is_refused(tmp_path):
    """Key confusion: an attacker signs HS256 with the (public) RSA key as the secret."""
    private = rsa_key()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    tokens = service(tmp_path, JWT_PUBLIC_KEY=pem)
    assert tokens.verify(jwt.encode(claims(), private, algorithm="RS256")).user_id == "alice"
    import base64
    import hashlib
    import hmac as _hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = _hmac.new(pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{head}.{body}.{b64(mac)}"
    assert code_of(tokens, forged) == "token_invalid"


def test_hs256_signed_with_a_jwks_key_is_refused(tmp_path, clock):
    k1 = rsa_key()
    with JwksServer() as server:
        server.keys = [public_jwk(k1, "k1")]
        tokens = jwks_service(tmp_path, server.url)
        modulus = public_jwk(k1, "k1")["n"].encode()  # public, so anyone can try it
        forged = jwt.encode(claims(), modulus, algorithm="HS256", headers={"kid": "k1"})
        assert code_of(tokens, forged) == "token_invalid"


@pytest.mark.parametrize("env", [{"JWT_SECRET_KEY": NEW}, {"JWT_SECRET_KEY": f"k:{NEW}"}])
def test_alg_none_is_refused_with_any_key_setup(tmp_path, env):
    tokens = service(tmp_path, **env)
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "k"})
    assert code_of(tokens, unsigned) == "token_invalid"


def test_jwks_token_connects_a_socket(tmp_path, clock, monkeypatch):
    """End to end through the connect handler: an IdP-issued token opens a socket."""
    from tests.support.app import ORIGIN as TEST_ORIGIN
    from tests.support.app import build_app
    from utils.extensions import socketio

    k1 = rsa_key()
    with JwksServer() as server:
        server.keys = [public_jwk(k1, "k1")]
        app = build_app(tmp_path, JWT_SECRET_KEY="", JWT_JWKS_URL=server.url)
        ok = socketio.test_client(app, auth={"token": signed(k1, "k1", sub="carol")},
                                  headers={"Origin": TEST_ORIGIN})
        assert ok.is_connected()
        assert ok.get_received()[0]["args"][0]["user_id"] == "carol"
        ok.disconnect()
        forged = socketio.test_client(app, auth={"token": signed(rsa_key(), "k1")},
                                      headers={"Origin": TEST_ORIGIN})
        assert not forged.is_connected()


def test_token_headers_cannot_point_at_another_key_set(tmp_path, clock):
    """jku / x5u / jwk in a token header are ignored: keys come from JWT_JWKS_URL only,
    so a token cannot make the server fetch from (or trust) an attacker's URL."""
    real, attacker = rsa_key(), rsa_key()
    with JwksServer() as ours, JwksServer() as theirs:
        ours.keys = [public_jwk(real, "k1")]
        theirs.keys = [public_jwk(attacker, "k1")]
        tokens = jwks_service(tmp_path, ours.url)
        forged = jwt.encode(claims(), attacker, algorithm="RS256", headers={
            "kid": "k1", "jku": theirs.url, "x5u": theirs.url,
            "jwk": public_jwk(attacker, "k1")})
        assert code_of(tokens, forged) == "token_invalid"
        assert theirs.fetches == 0


@pytest.mark.parametrize("kid", ["../../../etc/passwd", "' OR 1=1 --", "k1\x00", "x" * 5000,
                                 "", "__proto__", "k1 "])
def test_strange_kids_are_refused_without_trouble(tmp_path, clock, kid):
    k1 = rsa_key()
    with JwksServer() as server:
        server.keys = [public_jwk(k1, "k1")]
        tokens = jwks_service(tmp_path, server.url)
        assert code_of(tokens, signed(k1, kid)) == "token_invalid"
        shared = service(tmp_path, JWT_SECRET_KEY=f"k1:{NEW}")
        hs = jwt.encode(claims(), OLD, algorithm="HS256", headers={"kid": kid})
        assert code_of(shared, hs) == "token_invalid"
