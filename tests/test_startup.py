"""`make run`-style startup: nothing configured → embedded PostgreSQL, fakeredis, sandbox WeChat, /readyz 200,
and a sandbox login that goes through wechatpy to the server's own simulator over loopback HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import httpx

from tests.fixtures.environment import free_port


def test_fresh_start_with_nothing_configured() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sy") as data_dir:
        env = {
            k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "WECHAT_API_BASE"}
        }
        env.update(
            {"APP_ENV": "development", "DATA_DIR": data_dir, "PORT": str(port), "LOG_LEVEL": "WARNING"}
        )
        sangyu = [sys.executable, "-m", "app.cli"]
        subprocess.run([*sangyu, "migrate"], env=env, check=True, capture_output=True, timeout=180)
        server = subprocess.Popen(
            [*sangyu, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            ready = None
            while time.monotonic() < deadline:
                try:
                    ready = httpx.get(f"{base}/readyz", timeout=2)
                    if ready.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            assert ready is not None and ready.status_code == 200, (
                ready.text if ready else "server never answered"
            )
            assert httpx.get(f"{base}/healthz").json()["wechat_mode"] == "sandbox"
            login = httpx.post(
                f"{base}/api/v1/auth/wechat/login", json={"code": "sbx:fresh_user"}, timeout=15
            )
            assert login.status_code == 200, login.text
            me = httpx.get(
                f"{base}/api/v1/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
            )
            assert me.json()["openid"] == "fresh_user"
            assert httpx.get(f"{base}/docs").status_code == 200
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
