"""The built-in WeChat simulator, mounted under ``/sandbox`` only when ``WECHAT_MODE=sandbox``.

It behaves like WeChat rather than like a mock: the app reaches it over HTTP through the real SDKs, with
only the base URL changed. Its state lives in ``sandbox_*`` tables, written in its own transactions (it is
an outside system, not part of the request that called it)."""
