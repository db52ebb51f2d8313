"""Throwaway RSA keys for the WeChat Pay simulator, generated once per data directory.

Two key pairs, as with a real merchant: the merchant's API key (the app signs requests with it, the simulator
verifies) and the platform key (微信支付公钥: the simulator signs responses and notifications, the app
verifies). All of it is written atomically to one JSON file, so concurrent first starts agree on one set."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_lock = threading.Lock()
_cache: dict[str, SandboxKeys] = {}


@dataclass(frozen=True)
class SandboxKeys:
    merchant_private_pem: str
    merchant_public_pem: str
    merchant_serial_no: str
    platform_private_pem: str
    platform_public_pem: str
    public_key_id: str


def _pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def generate() -> SandboxKeys:
    merchant_private, merchant_public = _pair()
    platform_private, platform_public = _pair()
    return SandboxKeys(
        merchant_private_pem=merchant_private,
        merchant_public_pem=merchant_public,
        merchant_serial_no=secrets.token_hex(20).upper(),
        platform_private_pem=platform_private,
        platform_public_pem=platform_public,
        public_key_id="PUB_KEY_ID_" + "".join(secrets.choice("0123456789") for _ in range(32)),
    )


def load_sandbox_keys(data_dir: Path) -> SandboxKeys:
    """The keys under ``data_dir/wechatpay-sandbox/keys.json``, created on first use."""
    path = (Path(data_dir) / "wechatpay-sandbox" / "keys.json").resolve()
    with _lock:
        cached = _cache.get(str(path))
        if cached is not None:
            return cached
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            keys = generate()
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
            with os.fdopen(fd, "w") as fh:
                json.dump(keys.__dict__, fh)
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)  # fails if another process got there first: theirs wins
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        keys = SandboxKeys(**json.loads(path.read_text()))
        _cache[str(path)] = keys
        return keys
