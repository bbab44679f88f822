"""VAPID keys (RFC 8292) and the subject that goes with them.

A private key is read in the format Node's ``web-push generate-vapid-keys`` prints,
base64url of the raw 32-byte P-256 value, or as a PEM. The public key is handed to
browsers as base64url of the 65-byte uncompressed point, which is what
``PushManager.subscribe({applicationServerKey})`` takes.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Base64url with or without padding; ValueError when it is not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("is not base64url") from None


def exact_b64url(text: str, size: int) -> bytes:
    """``size`` bytes from their base64url, strictly: the alphabet only, padding only
    as much as the length needs, and the canonical last character. ValueError
    otherwise. A browser's keys are this, and "A" * 22 + "=" * 70 is not."""
    padding = "=" * (-size % 3)  # 16 bytes: "==", 65 bytes: "="
    bare = text.removesuffix(padding) if padding else text
    if not _B64URL.fullmatch(bare):
        raise ValueError("is not base64url")
    raw = unb64url(bare)
    if len(raw) != size or b64url(raw) != bare:
        raise ValueError(f"is not base64url of {size} bytes")
    return raw


def load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """The key from raw base64url or a PEM; ValueError (never quoting it) otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("is not a readable PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("must be a P-256 (prime256v1) key")
        return key
    raw = unb64url(text) if text.isascii() else b""
    if len(raw) != 32:
        raise ValueError("must be base64url of a 32-byte P-256 private key (what "
                         "`flask --app app vapid-keys` prints) or a PEM")
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError:
        raise ValueError("is not a valid P-256 private value") from None


def public_key_of(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url(key.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint))


def generate() -> tuple[str, str]:
    """A new (private, public) pair, both base64url."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big")), public_key_of(key)


def subject_problem(subject: str) -> str | None:
    """Why push services would refuse ``subject`` as the VAPID ``sub``, or None.
    Apple refuses a localhost one."""
    scheme, _, rest = subject.partition(":")
    if scheme == "mailto":
        local, at, domain = rest.rpartition("@")
        if not (local and at and "." in domain) or domain.lower() in LOOPBACK_NAMES:
            return "must be a mailto: address with a real domain (not localhost)"
        return None
    if scheme == "https":
        host = urlsplit(subject).hostname or ""
        if "." not in host and ":" not in host or host in LOOPBACK_NAMES:
            return "must be an https: URL with a real host (not localhost)"
        return None
    return "must start with mailto: or https:"
