"""PII at rest: AES-256-GCM ciphertext plus an HMAC-SHA256 lookup column; masking for display.

Ciphertext layout: ``b"\\x01" + nonce(12) + ciphertext||tag``. The version byte leaves room for key rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.config import get_settings

_VERSION = b"\x01"


class PIIDecryptError(Exception):
    pass


def encrypt_pii(plaintext: str, *, context: str) -> bytes:
    """Encrypt ``plaintext``; ``context`` (e.g. ``"elder.id_number"``) is bound as associated data so a
    ciphertext cannot be moved to another column unnoticed."""
    key = get_settings().pii_key_bytes()
    nonce = os.urandom(12)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())


def decrypt_pii(blob: bytes, *, context: str) -> str:
    if not blob or blob[:1] != _VERSION:
        raise PIIDecryptError("unknown PII ciphertext version")
    key = get_settings().pii_key_bytes()
    try:
        return AESGCM(key).decrypt(blob[1:13], blob[13:], context.encode()).decode()
    except Exception as exc:
        raise PIIDecryptError("PII ciphertext does not decrypt") from exc


def pii_lookup_hash(value: str, *, context: str) -> str:
    """Deterministic keyed hash for equality lookups and uniqueness without storing the value."""
    key = get_settings().pii_hmac_key_bytes()
    normalized = value.strip().upper()
    return hmac.new(key, f"{context}:{normalized}".encode(), hashlib.sha256).hexdigest()


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------- masking


def mask_id_number(value: str) -> str:
    """``371402195001011234`` → ``3714**********1234``."""
    v = value.strip()
    if len(v) <= 8:
        return "*" * len(v)
    return v[:4] + "*" * (len(v) - 8) + v[-4:]


def mask_phone(value: str) -> str:
    """``13800000000`` → ``138****0000``."""
    v = value.strip()
    if len(v) < 7:
        return "*" * len(v)
    return v[:3] + "*" * (len(v) - 7) + v[-4:]


def mask_name(value: str) -> str:
    """``王小明`` → ``王**``; one character stays as is only when the name is one character long."""
    v = value.strip()
    if len(v) <= 1:
        return v
    return v[0] + "*" * (len(v) - 1)


def mask_address(value: str) -> str:
    """Keep the first 6 characters (district/street level), hide the rest."""
    v = value.strip()
    if len(v) <= 6:
        return v[:2] + "*" * max(len(v) - 2, 0)
    return v[:6] + "****"
