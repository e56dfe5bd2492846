"""Static checks of the Dockerfile, compose, Kubernetes, nginx and monitoring files (no Docker needed)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml
from litestar.handlers import HTTPRouteHandler

from app.asgi import MetricsController
from app.cli import build_parser
from app.controllers.health import HealthController
from infrastructure.settings import describe_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OWN_IMAGES = {"parley", "ghcr.io/parley-chat/parley"}
PUBLIC_IMAGES = {"pgvector/pgvector", "postgres", "redis", "nginx", "prom/prometheus", "grafana/grafana"}
# Exported today by Litestar's Prometheus middleware, plus the relay's two gauges (announced in alerts.yml).
METRICS = {"parley_requests_total", "parley_request_duration_seconds_bucket", "parley_requests_in_progress"}
METRICS |= {"parley_outbox_backlog", "parley_stream_group_lag"}
# The read side's gauges every API node samples, and its WebSocket traffic metrics.
METRICS |= {
    "parley_projection_lag_seconds", "parley_projector_group_lag", "parley_projector_group_pending",
    "parley_stream_dead_letter_entries", "parley_stream_group_oldest_pending_seconds", "parley_outbox_oldest_seconds",
    "parley_ws_connections", "parley_ws_frames_in_total", "parley_ws_frames_out_total", "parley_ws_errors_total",
    "parley_ws_closes_total",
}  # fmt: skip


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def _served_paths() -> set[str]:
    paths = set()
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


def test_dockerfile_is_multi_stage_non_root_and_runs_parley() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM python:3\.11-slim\b", text, re.M)) >= 2
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
    assert re.search(r"pip install \.(\s|$)", text) and "[dev]" not in text
    assert json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M)[1]) == ["parley"]
    assert json.loads(re.search(r"^CMD (.+)$", text, re.M)[1])[0] in _subcommands()
    assert "/health/live" in text.split("HEALTHCHECK", 1)[1] and "/health/live" in _served_paths()
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", ".parley", ".env"} <= ignored


def test_compose_services_have_an_image_or_a_buildable_context() -> None:
    for name, svc in _compose()["services"].items():
        build = svc.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert svc.get("image") or context, name
        if context:
            assert (ROOT / context / "Dockerfile").is_file(), name


def test_compose_commands_are_parley_subcommands() -> None:
    services = _own_services()
    assert {"migrate", "api1", "api2", "relay", "projector", "worker"} <= set(services)
    for name, svc in services.items():
        command = svc["command"] if isinstance(svc["command"], list) else svc["command"].split()
        assert command[0] in _subcommands(), name
    assert services["api1"]["environment"]["PARLEY_NODE_ID"] != services["api2"]["environment"]["PARLEY_NODE_ID"]


def test_images_are_allow_listed() -> None:
    images = [svc["image"] for svc in _compose()["services"].values() if "image" in svc]
    images += [c["image"] for _, c in _containers()]
    assert images and [i for i in images if not _image_ok(i)] == []


def test_compose_variables_are_documented() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = build_parser().format_help() + "".join(p.read_text() for p in docs if p.is_file())
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    assert "JWT_SECRET" in used
    assert [v for v in used if not (_is_setting(v) or re.search(rf"\b{v}\b", text))] == []


def test_environment_given_to_parley_is_made_of_settings() -> None:
    keys = {k for svc in _own_services().values() for k in svc.get("environment", {})}
    for _, doc in _manifests():
        if doc["kind"] in {"ConfigMap", "Secret"}:
            keys |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    keys |= {e["name"] for _, c in _containers() for e in c.get("env", [])}
    assert {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "PARLEY_NODE_ID"} <= keys
    assert [k for k in keys if not _is_setting(k)] == []


def test_k8s_manifests_parse_and_are_named() -> None:
    manifests = _manifests()
    assert manifests
    for file, doc in manifests:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), file


def test_k8s_containers_run_parley_subcommands_as_non_root() -> None:
    for label, container in _containers():
        assert container["args"][0] in _subcommands(), label
    for file, doc in _manifests():
        if spec := _pod_spec(doc):
            assert spec["securityContext"]["runAsNonRoot"] is True, file


def test_k8s_probes_hit_served_paths() -> None:
    served = _served_paths()
    api = [
        (doc, c) for _, doc in _manifests() if (s := _pod_spec(doc)) for c in s["containers"] if c["args"][0] == "api"
    ]
    assert api
    for doc, container in api:
        assert doc["kind"] == "Deployment"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        node_id = next(e for e in container["env"] if e["name"] == "PARLEY_NODE_ID")
        assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for label, container in _containers():
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if "httpGet" in container.get(probe, {}):
                assert container[probe]["httpGet"]["path"] in served, label


def test_kustomization_lists_exactly_the_manifests() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")


def test_nginx_proxies_websockets_without_logging_tickets() -> None:
    text = (ROOT / "deploy" / "nginx" / "parley.conf").read_text()
    ws = re.search(r"location\s+(?:=\s*)?/ws\s*\{(.*?)\}", text, re.S)
    assert ws, "no location for /ws"
    block = ws[1]
    assert "proxy_http_version 1.1;" in block
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", block)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade;", block)
    assert re.search(r"proxy_read_timeout\s+\d{4,}s;", block) and "proxy_buffering off;" in block
    assert "X-Forwarded-For" in block and "X-Forwarded-Proto" in block
    log = re.search(r"access_log\s+(off|\S+\s+(\w+));", block)
    assert log, "set access_log for /ws"
    if log[1] != "off":
        fmt = re.search(rf"log_format\s+{log[2]}\s+(.*?);", text, re.S)[1]
        assert not re.search(r"\$(request\b|request_uri|args|query_string|arg_)", fmt)
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+):\d+", text, re.M))
    assert upstream == {n for n, s in _own_services().items() if s["command"][0] == "api"}


def test_prometheus_scrapes_metrics_and_alerts_are_complete() -> None:
    prom_dir = ROOT / "deploy" / "prometheus"
    config = yaml.safe_load((prom_dir / "prometheus.yml").read_text())
    assert all((prom_dir / f).is_file() for f in config["rule_files"])
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") in _served_paths()
    rules = [r for g in yaml.safe_load((prom_dir / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 4
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["for"], rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert set(re.findall(r"\bparley_\w+", rule["expr"])) <= METRICS, rule["alert"]
    exprs = " ".join(r["expr"] for r in rules)
    assert "parley_outbox_backlog" in exprs and "parley_stream_group_lag" in exprs and 'status_code=~"5' in exprs


def test_grafana_dashboard_has_panels_on_known_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "parley-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert dashboard["title"] and len(dashboard["panels"]) >= 5 and exprs
    assert set(re.findall(r"\bparley_\w+", " ".join(exprs))) <= METRICS
