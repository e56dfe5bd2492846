"""Real processes for end-to-end tests: `parley api` nodes, `parley relay`, `parley projector` and (when asked
for) `parley worker`, which tests may kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infrastructure.embedded import free_port


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if self.port is not None:
            self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.base_url + "/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no cleanup, exactly like a crashed machine."""
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    """Two API nodes and one relay over one PostgreSQL and one Redis (and a worker with ``with_worker``)."""

    env: dict[str, str]
    log_dir: Path
    nodes: list[Process] = field(default_factory=list)
    relay: Process | None = None
    #: `parley projector` processes (none unless ``projectors=`` is given to ``build``).
    projectors: list[Process] = field(default_factory=list)
    worker: Process | None = None

    @classmethod
    def build(
        cls,
        *,
        database_url: str,
        redis_url: str,
        log_dir: Path,
        jwt_secret: str,
        projectors: int = 0,
        with_worker: bool = False,
        **extra: str,
    ) -> Cluster:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "JWT_SECRET": jwt_secret,
            "PARLEY_SHARDS": "4",
            "PARLEY_LOG_LEVEL": "warning",
            **extra,
        }
        cluster = cls(env=env, log_dir=log_dir)
        for i in (1, 2):
            node_env = {**env, "PARLEY_NODE_ID": f"e2e-node-{i}"}
            port = free_port()
            cluster.nodes.append(
                Process(f"api{i}", ["api", "--port", str(port)], node_env, log_dir / f"api{i}.log", port=port)
            )
        cluster.relay = Process("relay", ["relay"], env, log_dir / "relay.log")
        for i in range(1, projectors + 1):
            cluster.projectors.append(cluster.projector(f"projector{i}"))
        if with_worker:
            cluster.worker = Process("worker", ["worker"], env, log_dir / "worker.log")
        return cluster

    def projector(self, name: str) -> Process:
        """A projector process (not started) with its own consumer name and metrics port."""
        env = {**self.env, "PARLEY_NODE_ID": f"e2e-{name}", "PARLEY_METRICS_PORT": str(free_port())}
        return Process(name, ["projector"], env, self.log_dir / f"{name}.log")

    def start(self) -> None:
        assert self.relay is not None
        self.relay.start()
        if self.worker is not None:
            self.worker.start()
        for process in [*self.projectors, *self.nodes]:
            process.start()

    def stop(self) -> None:
        for proc in [*self.nodes, self.relay, self.worker, *self.projectors]:
            if proc is not None:
                proc.stop()
