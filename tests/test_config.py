from __future__ import annotations

import base64

import pytest

from app.config import ConfigurationError, Settings, WeChatMode, check_startable


def _strong() -> dict[str, str]:
    return {
        "APP_ENV": "production",
        "SECRET_KEY": "s" * 40,
        "PII_KEY": base64.b64encode(b"k" * 32).decode(),
        "PII_HMAC_KEY": base64.b64encode(b"h" * 32).decode(),
        "WECHAT_APPID": "wx1234567890abcdef",
        "WECHAT_SECRET": "real-secret",
        "DATABASE_URL": "postgresql://db/sangyu",
        "REDIS_URL": "redis://redis:6379/0",
        "PUBLIC_BASE_URL": "https://meals.example.org",
        "WECHATPAY_MCHID": "1230000109",
        "WECHATPAY_APIV3_KEY": "A" * 32,
        "WECHATPAY_PRIVATE_KEY_PATH": "/run/secrets/wechatpay_private_key",
        "WECHATPAY_CERT_SERIAL_NO": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        "WECHATPAY_PUBLIC_KEY_PATH": "/run/secrets/wechatpay_public_key",
        "WECHATPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_0112345678901234567890",
    }


def test_sandbox_is_default_without_credentials() -> None:
    assert WeChatMode.sandbox == Settings(_env_file=None).WECHAT_MODE  # type: ignore[call-arg]


def test_production_with_everything_set_starts() -> None:
    settings = Settings(_env_file=None, **_strong())  # type: ignore[arg-type]
    assert WeChatMode.live == settings.WECHAT_MODE
    check_startable(settings)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"WECHAT_MODE": "sandbox"}, "sandbox"),
        ({"DEBUG": "true"}, "DEBUG"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"PII_KEY": Settings.model_fields["PII_KEY"].default}, "PII_KEY"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"WECHATPAY_APIV3_KEY": "short"}, "APIV3_KEY"),
        ({"PUBLIC_BASE_URL": "http://meals.example.org"}, "https"),
    ],
)
def test_production_refuses_unsafe_configuration(override: dict[str, str], reason: str) -> None:
    values = {**_strong(), **override}
    settings = Settings(_env_file=None, **{k: (v or None) for k, v in values.items()})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=reason):
        check_startable(settings)
