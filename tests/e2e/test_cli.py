"""The command line as a user meets it: `parley dev` on a bare machine, --help."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from infrastructure.embedded import free_port


def parley(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_parley_dev_starts_everything_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "JWT_SECRET"}}
    env["PARLEY_DATA_DIR"] = str(tmp_path / "data")
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()
            time.sleep(0.3)
        else:
            raise AssertionError("parley dev never became ready:\n" + (tmp_path / "dev.log").read_text())
        body = {"email": "dev@example.com", "password": "password-1", "name": "Dev"}
        assert httpx.post(f"{base}/api/auth/register", json=body).status_code == 201
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(60)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()


def test_help_lists_every_command_and_setting() -> None:
    result = parley("--help")
    assert result.returncode == 0
    for word in (
        "dev",
        "migrate",
        "api",
        "relay",
        "projector",
        "projections",
        "worker",
        "streams",
        "users",
        "DATABASE_URL",
        "JWT_SECRET",
    ):
        assert word in result.stdout
