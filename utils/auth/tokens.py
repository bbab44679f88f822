"""User tokens: minting (development, CLI) and verification (sockets, inbox API)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import jwt

from utils.config.settings import Settings
from utils.services import services

log = logging.getLogger(__name__)

MAX_USER_ID_LENGTH = 128


class TokenError(Exception):
    """A token that does not admit its bearer; ``code`` is the contract's refusal code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VerifiedToken:
    user_id: str
    expires_at: float | None
    claims: dict[str, Any]


class TokenService:
    """Signs and verifies JWTs with the algorithm list pinned by configuration."""


    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jwks = _jwks_client(settings) if settings.jwt_jwks_url else None
        if settings.jwt_public_key:
            self._keys: list[Any] = [settings.jwt_public_key]
        else:
            self._keys = list(settings.jwt_secret_keys)
        # kids name JWT_SECRET_KEY entries only; a public key has none.
        kids = () if settings.jwt_public_key else settings.jwt_key_ids
        self._by_kid = {kid: key for kid, key in zip(kids, self._keys, strict=False) if kid}

    def create(self, user_id: str, ttl: int = 3600, **extra: Any) -> str:
        key = self.settings.signing_key
        if not key or self.settings.jwt_public_key:
            raise RuntimeError(
                "this server verifies tokens with JWT_PUBLIC_KEY; mint them at your issuer"
            )
        now = int(time.time())
        claims: dict[str, Any] = {
            self.settings.jwt_user_claim: str(user_id),
            "iat": now,
            "exp": now + int(ttl),
        }
        if self.settings.jwt_audience:
            claims["aud"] = self.settings.jwt_audience
        if self.settings.jwt_issuer:
            claims["iss"] = self.settings.jwt_issuer
        claims.update(extra)
        kid = self.settings.jwt_key_ids[0] if self.settings.jwt_key_ids else None
        headers = {"kid": kid} if kid else None
        return jwt.encode(claims, key, algorithm=self.settings.jwt_algorithms[0],
                          headers=headers)

    def verify(self, token: object) -> VerifiedToken:
        if not isinstance(token, str) or not token:
            raise TokenError("token_missing", "no token was sent")
        if len(token) > 8192:
            raise TokenError("token_invalid", "token is too long")
        claims = self._decode(token)
        user_id = claims.get(self.settings.jwt_user_claim)
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID_LENGTH \
                or not _storable(user_id):
            raise TokenError(
                "token_invalid", f"token has no usable '{self.settings.jwt_user_claim}' claim"
            )
        exp = claims.get("exp")
        return VerifiedToken(user_id, float(exp) if exp is not None else None, claims)

    def _candidate_keys(self, token: str) -> list[Any]:
        """The keys worth trying: the one the header's kid names, else all of ours."""
        if self._jwks is None and not self._by_kid and len(self._keys) == 1:
            return list(self._keys)  # one key, no kids: no header to read (every connect)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except Exception:  # malformed header: jwt.decode below reports it
            kid = None
        keys = list(self._keys)
        if isinstance(kid, str) and kid in self._by_kid:
            keys = [self._by_kid[kid]]
        if self._jwks is not None:
            keys = [self._jwks_key(token), *keys]
        return keys

    def _jwks_key(self, token: str) -> Any:
        try:
            return self._jwks.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError:
            # The provider is unreachable and nothing usable is cached.
            log.warning("JWKS fetch failed; refusing tokens that need it")
            raise TokenError("token_invalid", "the token's signing key is unavailable") from None
        except (jwt.PyJWTError, Exception):
            raise TokenError("token_invalid", "the token's key is not in the JWK Set") from None

    def _decode(self, token: str) -> dict[str, Any]:
        settings = self.settings
        options = {"require": ["exp"]}
        for key in self._candidate_keys(token):
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=list(settings.jwt_algorithms),
                    audience=settings.jwt_audience,
                    issuer=settings.jwt_issuer,
                    leeway=settings.jwt_leeway,
                    options=options,
                )
            except jwt.ExpiredSignatureError:
                raise TokenError("token_expired", "token has expired") from None
            except jwt.InvalidSignatureError:
                continue  # try the next key: rotation keeps the previous one valid
            except jwt.PyJWTError as exc:
                raise TokenError("token_invalid", _describe(exc)) from None
            except Exception:  # malformed input PyJWT did not anticipate
                raise TokenError("token_invalid", "token could not be decoded") from None
        raise TokenError("token_invalid", "token signature does not verify")


def _jwks_client(settings: Settings) -> jwt.PyJWKClient:
    # Only the whole JWK Set is cached, for a bounded time: PyJWKClient's per-kid
    # cache (cache_keys) never expires, so a key the provider withdrew would stay
    # trusted. An unknown kid forces at most one refresh per cooldown.
    return jwt.PyJWKClient(
        settings.jwt_jwks_url,
        cache_keys=False,
        cache_jwk_set=True,
        lifespan=settings.jwt_jwks_cache_seconds,
        timeout=settings.jwt_jwks_timeout,
        cooldown_duration=settings.jwt_jwks_cooldown,
    )


def _describe(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token audience is not accepted"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token issuer is not accepted"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "token algorithm is not accepted"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the '{exc.claim}' claim"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token is not valid yet"
    return "token is malformed"


def tokens() -> TokenService:
    return services().tokens


def create_access_token(user_id: str, ttl: int = 3600, **extra: Any) -> str:
    """A signed token for ``user_id`` that expires after ``ttl`` seconds."""
    return tokens().create(user_id, ttl, **extra)


def verify_access_token(token: object) -> VerifiedToken:
    """The verified identity in ``token``, or :class:`TokenError` with a refusal code."""
    return tokens().verify(token)


def _storable(text: str) -> bool:
    """Text every database can store: valid UTF-8 (no lone surrogate), no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text
