"""`parley dev`: the whole system on one machine, under one supervisor.

PostgreSQL and Redis are embedded (data in ``$PARLEY_DATA_DIR``, default ``./.parley``) unless
``DATABASE_URL`` / ``REDIS_URL`` are set. Each role runs as its own child process, exactly as in
production; if one dies the supervisor stops the rest and exits non-zero.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from infrastructure.embedded import start_postgres, start_redis
from infrastructure.migrate import upgrade_head
from infrastructure.settings import async_database_url

#: Roles `parley dev` supervises, in start order. Grows as roles are built.
DEV_ROLES: list[list[str]] = [["relay"], ["projector"], ["worker"]]


def _dev_secret(data_dir: Path) -> str:
    """A JWT secret that survives restarts of `parley dev` (so logins do too), never committed."""
    path = data_dir / "jwt-secret"
    if not path.exists():
        import secrets

        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def prepare_environment(data_dir: Path) -> tuple[dict[str, str], list[object]]:
    """Environment for the children, starting embedded servers where no URL is configured."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    owned: list[object] = []
    if "DATABASE_URL" not in env:
        pg = start_postgres(data_dir / "postgres")
        pg.create_database("parley")
        env["DATABASE_URL"] = pg.url("parley")
        owned.append(pg)
        print(f"embedded PostgreSQL (pgvector) in {pg.data_dir}", flush=True)
    if "REDIS_URL" not in env:
        redis = start_redis(data_dir / "redis")
        env["REDIS_URL"] = redis.url
        owned.append(redis)
        print(f"embedded Redis at {redis.url}", flush=True)
    env.setdefault("JWT_SECRET", _dev_secret(data_dir))
    env.setdefault("LLM_PROVIDER", "anthropic" if env.get("ANTHROPIC_API_KEY") else "offline")
    env.setdefault("PARLEY_NODE_ID", "dev")
    return env, owned


def run_dev(*, host: str, port: int) -> int:
    data_dir = Path(os.environ.get("PARLEY_DATA_DIR", ".parley")).resolve()
    env, owned = prepare_environment(data_dir)
    upgrade_head(async_database_url(env["DATABASE_URL"]))
    roles = [["api", "--host", host, "--port", str(port)], *DEV_ROLES]
    children = [subprocess.Popen([sys.executable, "-m", "app.cli", *role], env=env) for role in roles]
    print(f"Parley is running on http://{host}:{port} (API docs: /schema/swagger). Ctrl-C stops it.", flush=True)

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        while not stopping:
            for child, role in zip(children, roles, strict=True):
                if child.poll() is not None:
                    print(f"parley {role[0]} exited with {child.returncode}; stopping", file=sys.stderr)
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(owned):
            server.stop()  # type: ignore[attr-defined]
    return exit_code
