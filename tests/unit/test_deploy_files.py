"""The deploy files, checked without an engine: by the real validators (compose-spec JSON schema,
kubernetes-validate, promtool, nginx -t; `make deploy-tools` installs the last two) and against the
code (every command a role that exists, every probe a served path, every metric an exported one)."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litestar.handlers import HTTPRouteHandler
from prometheus_client import REGISTRY

from app.asgi import MetricsController
from app.cli import build_parser
from app.controllers.health import HealthController
from infrastructure.metrics_server import DEFAULT_PORTS
from infrastructure.settings import Settings, describe_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"
BIN = Path(sys.executable).parent
OWN_IMAGES = {"parley", "ghcr.io/parley-chat/parley"}
PUBLIC_IMAGES = {"pgvector/pgvector", "postgres", "redis", "nginx", "prom/prometheus", "grafana/grafana"}
#: The modules each role runs; importing them registers every metric the role exports. A new role
#: adds its module here and its port to infrastructure/metrics_server.py.
ROLE_MODULES = {
    "api": ["app.asgi"],
    "relay": ["workers.outbox_relay"],
    "projector": ["workers.projector"],
    "worker": ["workers.worker"],
}
#: Paths the relay-style metrics server answers (infrastructure/metrics_server.py).
METRICS_SERVER_PATHS = {"/metrics", "/health/live"}


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def _runnable_roles() -> set[str]:
    """Every sub-command runs: a role that is not built yet would be left out here (it refuses to run)."""
    return _subcommands()


def _served_paths() -> set[str]:
    paths = set(METRICS_SERVER_PATHS)
    for controller in (HealthController, MetricsController):
        for name in dir(controller):
            handler = getattr(controller, name)
            if isinstance(handler, HTTPRouteHandler):
                paths |= {(controller.path.rstrip("/") + "/" + p.strip("/")).rstrip("/") for p in handler.paths}
    return paths


def _is_setting(name: str) -> bool:
    envs = [env for env, _ in describe_settings()]
    return name in envs or any(e.endswith("<NAME>") and name.startswith(e.removesuffix("<NAME>")) for e in envs)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _own_services() -> dict[str, Any]:
    return {name: svc for name, svc in _compose()["services"].items() if "build" in svc}


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    return doc["spec"]["template"]["spec"] if doc["kind"] in {"Deployment", "Job", "StatefulSet"} else None


def _containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{f}:{d['metadata']['name']}", c) for f, d in _manifests() if (s := _pod_spec(d)) for c in s["containers"]
    ]


def _image_ok(image: str) -> bool:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return name in OWN_IMAGES or (name in PUBLIC_IMAGES and bool(tag) and tag != "latest")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, check=False)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"{name} is missing: run `make deploy-tools`"
    return found


# -- Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_builds_from_the_lock_file_in_two_stages_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM python:\$\{PYTHON_VERSION\}-slim\b", text, re.M)) == 2
    assert re.search(r"^ARG PYTHON_VERSION=3\.1[123]$", text, re.M)
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
    assert re.search(r"pip install --constraint requirements/lock\.txt \.(\s|$)", text) and "[dev]" not in text
    assert "COPY --from=build /opt/venv /opt/venv" in text
    assert json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M)[1]) == ["parley"]
    assert json.loads(re.search(r"^CMD (.+)$", text, re.M)[1])[0] in _runnable_roles()
    assert "/health/live" in text.split("HEALTHCHECK", 1)[1] and "/health/live" in _served_paths()
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", ".parley", ".env", "tests"} <= ignored
    assert not {"requirements", "README.md", "pyproject.toml"} & ignored


# -- docker compose --------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    result = _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_every_role_that_exists_and_none_that_does_not() -> None:
    services = _own_services()
    commands = {name: svc["command"] for name, svc in services.items()}
    assert all(command[0] in _runnable_roles() for command in commands.values()), commands
    assert {"migrate", "api", "relay"} <= {command[0] for command in commands.values()}
    assert services["api1"]["environment"]["PARLEY_NODE_ID"] != services["api2"]["environment"]["PARLEY_NODE_ID"]
    assert {"postgres", "redis", "nginx", "prometheus", "grafana"} <= set(_compose()["services"])
    assert _compose()["services"]["postgres"]["image"].startswith("pgvector/pgvector:")


def test_compose_publishes_only_the_entry_point_beyond_loopback() -> None:
    published = {name: port for name, svc in _compose()["services"].items() for port in svc.get("ports", []) if port}
    open_ports = [name for name, port in published.items() if not str(port).startswith("127.0.0.1:")]
    assert open_ports == ["nginx"]
    assert "postgres" not in published and "redis" not in published


def test_images_are_allow_listed() -> None:
    images = [svc["image"] for svc in _compose()["services"].values() if "image" in svc]
    images += [c["image"] for _, c in _containers()]
    assert images and [i for i in images if not _image_ok(i)] == []


def test_compose_variables_are_documented_and_in_env_example() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = build_parser().format_help() + "".join(p.read_text() for p in docs if p.is_file())
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    example = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert {"JWT_SECRET", "GRAFANA_ADMIN_PASSWORD"} <= used
    assert used == example
    assert [v for v in used if not (_is_setting(v) or re.search(rf"\b{v}\b", text))] == []


def test_environment_given_to_parley_is_made_of_settings() -> None:
    keys = {k for svc in _own_services().values() for k in svc.get("environment", {})}
    for _, doc in _manifests():
        if doc["kind"] in {"ConfigMap", "Secret"}:
            keys |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    keys |= {e["name"] for _, c in _containers() for e in c.get("env", [])}
    assert {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "PARLEY_NODE_ID", "PARLEY_LOG_FORMAT"} <= keys
    assert [k for k in keys if not _is_setting(k)] == []


# -- Kubernetes ------------------------------------------------------------------------------------


def test_k8s_manifests_are_valid_kubernetes_objects() -> None:
    files = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    result = _run(BIN / "kubernetes-validate", "--strict", "--quiet", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_lists_exactly_the_manifests() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")


def test_k8s_containers_run_roles_that_exist_as_non_root() -> None:
    for label, container in _containers():
        assert container["args"][0] in _runnable_roles(), label
    for file, doc in _manifests():
        if spec := _pod_spec(doc):
            assert spec["securityContext"]["runAsNonRoot"] is True, file


def test_every_k8s_deployment_has_probes_on_served_paths() -> None:
    served = _served_paths()
    deployments = [(d, c) for _, d in _manifests() if d["kind"] == "Deployment" for c in _pod_spec(d)["containers"]]
    assert {c["args"][0] for _, c in deployments} == {"api", "relay", "projector", "worker"}
    for doc, container in deployments:
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] in served, (doc["metadata"]["name"], probe)
        if container["args"][0] == "api":
            assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
            node_id = next(e for e in container["env"] if e["name"] == "PARLEY_NODE_ID")
            assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        else:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports[container["livenessProbe"]["httpGet"]["port"]] == DEFAULT_PORTS[container["args"][0]]


# -- nginx -----------------------------------------------------------------------------------------


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    """The real nginx parses the file; the upstream host names only resolve inside compose, so the
    copy under test points them at 127.0.0.1 (the test below checks the names against compose)."""
    conf = (ROOT / "deploy" / "nginx" / "parley.conf").read_text()
    local = re.sub(r"^(\s*server\s+)[\w.-]+(:\d+)", r"\g<1>127.0.0.1\2", conf, flags=re.M)
    (tmp_path / "parley.conf").write_text(local)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log {tmp_path}/access.log;\n  include {tmp_path}/parley.conf;\n}}\n"
    )
    result = _run(_tool("nginx"), "-t", "-p", tmp_path, "-c", tmp_path / "nginx.conf")
    assert result.returncode == 0, result.stderr


def test_nginx_proxies_websockets_without_logging_tickets() -> None:
    text = (ROOT / "deploy" / "nginx" / "parley.conf").read_text()
    ws = re.search(r"location\s+(?:=\s*)?/ws\s*\{(.*?)\}", text, re.S)
    assert ws, "no location for /ws"
    block = ws[1]
    assert "proxy_http_version 1.1;" in block
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", block)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade;", block)
    assert re.search(r"proxy_read_timeout\s+\d{4,}s;", block) and "proxy_buffering off;" in block
    log = re.search(r"access_log\s+(off|\S+\s+(\w+));", block)
    assert log, "set access_log for /ws"
    if log[1] != "off":
        fmt = re.search(rf"log_format\s+{log[2]}\s+(.*?);", text, re.S)[1]
        assert not re.search(r"\$(request\b|request_uri|args|query_string|arg_)", fmt)
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+):\d+", text, re.M))
    assert upstream == {n for n, s in _own_services().items() if s["command"][0] == "api"}


# -- Prometheus and Grafana ------------------------------------------------------------------------


def test_prometheus_config_and_rules_pass_promtool() -> None:
    promtool = _tool("promtool")
    config = _run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _run(promtool, "check", "rules", PROMETHEUS / "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_prometheus_scrapes_every_role_on_its_metrics_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") in _served_paths()
    services = _own_services()
    for name, svc in services.items():
        role = svc["command"][0]
        if role == "api":
            assert f"{name}:8000" in targets
        elif role in DEFAULT_PORTS:
            assert f"{name}:{DEFAULT_PORTS[role]}" in targets, name


async def _exported_metrics() -> set[str]:
    """Every sample name the roles' modules register; Litestar creates its HTTP metrics on the first
    request, so one request goes through an API app (no lifespan: no database needed)."""
    for modules in ROLE_MODULES.values():
        for module in modules:
            importlib.import_module(module)
    from app.asgi import create_app

    app = create_app(Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/schema/openapi.json")).status_code == 200
    names: set[str] = set()
    for family in REGISTRY.collect():  # a labelled metric with no series yet still names its family
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes} | {sample.name for sample in family.samples}
    return names


def _used_metrics(expressions: list[str]) -> set[str]:
    return set(re.findall(r"\bparley_\w+", " ".join(expressions)))


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "deploy" / "grafana" / "parley-dashboard.json").read_text())
    return data


async def test_every_metric_in_alerts_and_dashboard_is_exported_by_some_role(
    alert_rules: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    exported = await _exported_metrics()
    used = _used_metrics([r["expr"] for r in alert_rules])
    used |= _used_metrics([t["expr"] for p in dashboard["panels"] for t in p["targets"]])
    assert len(used) >= 10
    assert sorted(used - exported) == []


def test_alerts_are_complete(alert_rules: list[dict[str, Any]]) -> None:
    for rule in alert_rules:
        assert rule["alert"] and rule["expr"] and rule["for"], rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
    exprs = " ".join(r["expr"] for r in alert_rules)
    for needed in ("parley_outbox_backlog", "parley_stream_group_lag", 'status_code=~"5', 'job="parley-relay"'):
        assert needed in exprs


def test_dashboard_plots_the_pipeline(dashboard: dict[str, Any]) -> None:
    used = _used_metrics([t["expr"] for p in dashboard["panels"] for t in p["targets"]])
    for needed in (
        "parley_ws_ack_seconds_bucket",  # ack latency
        "parley_delivery_seconds_bucket",  # delivery latency
        "parley_ws_connections",
        "parley_stream_group_lag",
        "parley_outbox_backlog",
        "parley_db_pool_connections",
    ):
        assert needed in used
