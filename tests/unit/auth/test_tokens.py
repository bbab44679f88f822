"""utils/auth/tokens.py: signing and verification with pinned algorithms."""

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.app import SECRET
from utils.auth.tokens import TokenError, TokenService
from utils.config.settings import load_settings


def service(tmp_path, **env):
    base = {"JWT_SECRET_KEY": SECRET, "FRONTEND_URLS": "http://localhost:3000"}
    return TokenService(load_settings({**base, **env}, tmp_path))


def encode(claims, key=SECRET, algorithm="HS256", **kw):
    return jwt.encode(claims, key, algorithm=algorithm, **kw)


def claims(**extra):
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 60, **extra}


def test_round_trip(tmp_path):
    tokens = service(tmp_path)
    verified = tokens.verify(tokens.create("alice", 60))
    assert verified.user_id == "alice"
    assert verified.expires_at == pytest.approx(time.time() + 60, abs=2)


@pytest.mark.parametrize("token, code", [
    (None, "token_missing"),
    ("", "token_missing"),
    ("not-a-jwt", "token_invalid"),
    ("a.b.c", "token_invalid"),
    ("x" * 9000, "token_invalid"),
])
def test_malformed(tmp_path, token, code):
    with pytest.raises(TokenError) as excinfo:
        service(tmp_path).verify(token)
    assert excinfo.value.code == code


def test_expired(tmp_path):
    token = encode(claims(exp=int(time.time()) - 60))
    with pytest.raises(TokenError) as excinfo:
        service(tmp_path, JWT_LEEWAY="0").verify(token)
    assert excinfo.value.code == "token_expired"


def test_leeway_admits_small_skew_only(tmp_path):
    token = encode(claims(exp=int(time.time()) - 5))
    assert service(tmp_path, JWT_LEEWAY="30").verify(token).user_id == "alice"
    with pytest.raises(TokenError):
        service(tmp_path, JWT_LEEWAY="0").verify(token)


def test_wrong_key(tmp_path):
    with pytest.raises(TokenError) as excinfo:
        service(tmp_path).verify(encode(claims(), key="another-secret-" + "x" * 30))
    assert excinfo.value.code == "token_invalid"


def test_alg_none_is_rejected(tmp_path):
    token = jwt.encode(claims(), None, algorithm="none")
    with pytest.raises(TokenError) as excinfo:
        service(tmp_path).verify(token)
    assert excinfo.value.code == "token_invalid"


def test_algorithm_outside_the_list_is_rejected(tmp_path):
    token = encode(claims(), algorithm="HS512")
    with pytest.raises(TokenError):
        service(tmp_path).verify(token)
    assert service(tmp_path, JWT_ALGORITHMS="HS512").verify(token).user_id == "alice"


def test_token_without_exp_is_rejected(tmp_path):
    with pytest.raises(TokenError) as excinfo:
        service(tmp_path).verify(encode({"sub": "alice"}))
    assert excinfo.value.code == "token_invalid"


@pytest.mark.parametrize("sub", [None, "", 3.5, ["alice"], {"id": 1}, "u" * 200, True])
def test_unusable_user_claim(tmp_path, sub):
    with pytest.raises(TokenError) as excinfo:
        service(tmp_path).verify(encode(claims(sub=sub)))
    assert excinfo.value.code == "token_invalid"


def test_integer_user_claim_becomes_a_string(tmp_path):
    token = encode({"user_id": 42, "exp": int(time.time()) + 60})
    assert service(tmp_path, JWT_USER_CLAIM="user_id").verify(token).user_id == "42"
    # RFC 7519 makes "sub" a string, and PyJWT enforces it.
    with pytest.raises(TokenError):
        service(tmp_path).verify(encode(claims(sub=42)))


def test_custom_user_claim(tmp_path):
    tokens = service(tmp_path, JWT_USER_CLAIM="user_id")
    token = encode({"user_id": "bob", "sub": "mallory", "exp": int(time.time()) + 60})
    assert tokens.verify(token).user_id == "bob"
    assert tokens.verify(tokens.create("carol")).user_id == "carol"


def test_audience_and_issuer_enforced(tmp_path):
    tokens = service(tmp_path, JWT_AUDIENCE="notifications", JWT_ISSUER="https://id.example")
    good = encode(claims(aud="notifications", iss="https://id.example"))
    assert tokens.verify(good).user_id == "alice"
    for bad in (claims(aud="other", iss="https://id.example"),
                claims(aud="notifications", iss="https://evil.example"),
                claims()):
        with pytest.raises(TokenError) as excinfo:
            tokens.verify(encode(bad))
        assert excinfo.value.code == "token_invalid"
    assert tokens.verify(tokens.create("dave")).user_id == "dave"


def _pem_pair(private_key):
    pem_private = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    pem_public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem_private, pem_public.decode()


@pytest.mark.parametrize("algorithm, key", [
    ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
])
def test_public_key_tokens(tmp_path, algorithm, key):
    private, public = _pem_pair(key())
    tokens = service(tmp_path, JWT_SECRET_KEY="", JWT_PUBLIC_KEY=public,
                     JWT_ALGORITHMS=algorithm)
    assert tokens.verify(encode(claims(), key=private, algorithm=algorithm)).user_id == "alice"


def test_hs_rs_key_confusion_is_rejected(tmp_path):
    """A token HMAC-signed with the (public) RSA key must not verify."""
    private, public = _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    tokens = service(tmp_path, JWT_SECRET_KEY="", JWT_PUBLIC_KEY=public)
    import base64
    import hashlib
    import hmac
    import json

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    forged = f"{header}.{payload}.{b64(signature.digest())}"
    with pytest.raises(TokenError) as excinfo:
        tokens.verify(forged)
    assert excinfo.value.code == "token_invalid"


def test_previous_key_still_verifies_during_rotation(tmp_path):
    old, new = "old-secret-" + "o" * 30, "new-secret-" + "n" * 30
    tokens = service(tmp_path, JWT_SECRET_KEY=f"{new},{old}")
    assert tokens.verify(encode(claims(), key=old)).user_id == "alice"
    assert tokens.verify(tokens.create("bob")).user_id == "bob"
    assert jwt.decode(tokens.create("bob"), new, algorithms=["HS256"])["sub"] == "bob"
