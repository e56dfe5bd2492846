"""The published contract against a real run: the OpenAPI document checked by schemathesis against a
running API (no 5xx, every status, header, content type and body as documented), then the logs of that
run searched for secrets, and the metrics of every role checked for the series the dashboard plots.

One cluster (two API nodes and a relay, JSON logs at INFO) serves the whole module: the schemathesis run
is also the traffic whose logs and metrics the later tests read.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from infrastructure.embedded import EmbeddedRedis
from tests.e2e.checker import History
from tests.e2e.client import Api, ChatClient
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import running_cluster

ROOT = Path(__file__).resolve().parents[2]
ST = Path(sys.executable).with_name("st")
PASSWORD = "contract-pass-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def contract_cluster(
    e2e_database_url: str, e2e_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    with running_cluster(
        e2e_database_url,
        e2e_redis,
        tmp_path_factory.mktemp("contract-logs"),
        PARLEY_LOG_LEVEL="info",
        PARLEY_LOG_FORMAT="json",
        PARLEY_LIMIT_MESSAGES_PER_SECOND="1000",
        PARLEY_LIMIT_MESSAGE_BURST="1000",
    ) as built:
        yield built


@pytest.fixture(scope="module")
def secrets_used() -> list[str]:
    """Every credential the module's traffic carries; none may appear in any log."""
    return [PASSWORD]


def _register(base_url: str, secrets: list[str]) -> dict[str, Any]:
    email = f"contract-{uuid.uuid4().hex[:10]}@example.com"
    r = httpx.post(f"{base_url}/api/auth/register", json={"email": email, "password": PASSWORD, "name": "C"})
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    secrets += [body["access_token"], body["refresh_token"]]
    return body


def _schemathesis(base_url: str, token: str, *extra: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [
        str(ST), "--config-file", str(ROOT / "tests" / "e2e" / "schemathesis.toml"), "--no-color",
        "run", f"{base_url}/schema/openapi.json", "-H", f"Authorization: Bearer {token}",
        "--seed", "1", "--max-examples", "15", "--workers", "1", "--request-timeout", "10", *extra,
    ]  # fmt: skip
    # One worker: with two threads, CPython 3.11's ast.parse (used by hypothesis to describe lambdas) can
    # fail with "SystemError: AST constructor recursion depth mismatch", a tool error, not the API's.
    # cwd: schemathesis keeps a cache directory (.schemathesis) where it runs; not in the repository.
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, cwd=cwd)


def test_openapi_document_holds_against_the_running_api(contract_cluster: Cluster, secrets_used: list[str]) -> None:
    base = contract_cluster.nodes[0].base_url
    token = _register(base, secrets_used)["access_token"]
    # Every operation but logout (it would revoke the token the others use), all four phases.
    run = _schemathesis(base, token, "--exclude-operation-id", "Logout", cwd=contract_cluster.log_dir.parent)
    assert run.returncode == 0, run.stdout[-6000:]
    assert re.search(r"\d+ generated, \d+ passed", run.stdout), run.stdout[-2000:]
    other = _register(base, secrets_used)["access_token"]
    logout = _schemathesis(base, other, "--include-operation-id", "Logout", cwd=contract_cluster.log_dir.parent)
    assert logout.returncode == 0, logout.stdout[-6000:]


async def test_websocket_traffic_for_the_logs_and_metrics(contract_cluster: Cluster, secrets_used: list[str]) -> None:
    """A ticket in the query string, a bearer header, a send, a delivery: the lines the next tests read."""
    node = contract_cluster.nodes[0]
    api = Api(node.base_url)
    owner = _register(node.base_url, secrets_used)
    user = {"id": owner["user"]["id"], "token": owner["access_token"]}
    conversation = await api.conversation(user)
    ticket = await api.ticket(user)
    secrets_used.append(ticket)
    async with websockets.connect(f"{node.ws_url}?ticket={ticket}") as ws:
        await ws.send(json.dumps({"type": "join", "conversation_id": conversation}))
        assert json.loads(await ws.recv())["type"] == "joined"
        # And one error frame (a conversation that does not exist), for the error metrics.
        await ws.send(json.dumps({"type": "join", "conversation_id": str(uuid.uuid4())}))
        assert json.loads(await ws.recv())["type"] == "error"
    client = await ChatClient("c", History()).connect(contract_cluster.nodes[1].ws_url, user["token"])
    try:
        await client.join(conversation)
        ack = await client.send(conversation, "hello")
        await client.wait_for_seq(conversation, ack["seq"])
    finally:
        await client.close()


def _log_lines(cluster: Cluster) -> list[tuple[str, dict[str, Any]]]:
    lines = []
    for path in sorted(cluster.log_dir.glob("*.log")):
        text = path.read_text()
        # Only complete lines: a process may be writing the last one while the test reads the file.
        for raw in text[: text.rfind("\n") + 1].splitlines():
            if raw.strip():
                lines.append((path.name, json.loads(raw)))  # every line of every process is one JSON object
    return lines


def _ws_access_lines(cluster: Cluster) -> list[dict[str, Any]]:
    return [e for _, e in _log_lines(cluster) if e["logger"] == "parley.access" and '"WS ' in e["msg"]]


def test_logs_of_the_run_hold_no_secret_and_carry_ids(contract_cluster: Cluster, secrets_used: list[str]) -> None:
    deadline = time.monotonic() + 10
    while len(_ws_access_lines(contract_cluster)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)  # a socket's close line is written when the server has finished with it
    text = "\n".join(p.read_text() for p in contract_cluster.log_dir.glob("*.log"))
    assert len(secrets_used) >= 6
    leaked = [s[:12] + "…" for s in secrets_used if s in text]
    assert leaked == []
    assert "ticket=[REDACTED]" in text  # the WS line is there, its ticket is not
    access = [(f, e) for f, e in _log_lines(contract_cluster) if e["logger"] == "parley.access"]
    http = [e for _, e in access if '"WS ' not in e["msg"]]
    ws = [e for _, e in access if '"WS ' in e["msg"]]
    assert len(http) > 100 and len(ws) >= 4
    assert [e for e in http if not e.get("request_id")] == []
    assert [e for e in ws if not e.get("connection_id")] == []


def _samples(text: str) -> dict[str, float]:
    """Series name -> summed value, from Prometheus' text format."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def test_every_dashboard_series_has_data_after_the_run(contract_cluster: Cluster) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "parley-dashboard.json").read_text())
    wanted = set(re.findall(r"\bparley_\w+", " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])))
    scraped: dict[str, float] = {}
    urls = [f"{n.base_url}/metrics" for n in contract_cluster.nodes]
    urls.append(f"http://127.0.0.1:{contract_cluster.relay_metrics_port}/metrics")
    for url in urls:
        for name, value in _samples(httpx.get(url, timeout=5).text).items():
            scraped[name] = scraped.get(name, 0.0) + value
    missing = sorted(name for name in wanted if name not in scraped)
    assert missing == []
    # Rates and latencies need observations, not only declared series.
    counted = ("parley_requests_total", "parley_ws_ack_seconds_count", "parley_delivery_seconds_count")
    assert all(scraped.get(name, 0) > 0 for name in counted), {n: scraped.get(n) for n in counted}
