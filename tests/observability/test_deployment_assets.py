"""docker-compose and the Helm chart cover every process of contracts.topology.

Neither Docker nor Kubernetes runs here: compose is validated by `docker-compose config`, and
the chart (which needs helm to render) by its values and the structure of its templates.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from contracts.topology import CONSUMERS

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "codegen-orchestrator"
CONSUMER_PROCESSES = sorted({spec.process for spec in CONSUMERS})


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_compose_file_is_valid() -> None:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: apt-get install docker-compose"
    result = subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_every_consumer_and_prometheus_scrapes_it() -> None:
    services = load(REPO / "docker-compose.yml")["services"]
    scrape = load(REPO / "infra" / "prometheus" / "prometheus.yml")["scrape_configs"][0]
    scraped = {
        group["labels"]["process"]: group["targets"][0] for group in scrape["static_configs"]
    }
    for process in CONSUMER_PROCESSES:
        assert services[process]["command"] == ["python", "-m", f"consumers.{process}"]
        assert services[process]["environment"]["ORCH_PROCESS_NAME"] == process
        assert scraped[process] == f"{process}:9100"
    for infra_service in (
        "nats-0",
        "postgres",
        "openbao",
        "qdrant",
        "prometheus",
        "grafana",
        "loki",
    ):
        assert infra_service in services


def test_chart_depends_on_nats() -> None:
    chart = load(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert [d["name"] for d in chart["dependencies"]] == ["nats"]


def test_values_declare_every_durable_of_the_topology() -> None:
    processes = load(CHART / "values.yaml")["processes"]
    for process in CONSUMER_PROCESSES:
        expected = [
            {"name": spec.durable, "stream": spec.stream.name}
            for spec in CONSUMERS
            if spec.process == process
        ]
        assert processes[process]["durables"] == expected, process
        assert processes[process]["module"] == f"consumers.{process}"
    declared = {d["name"] for p in processes.values() for d in p["durables"]}
    assert declared == {spec.durable for spec in CONSUMERS}


def test_every_process_gets_a_deployment_a_service_and_consumers_a_scaled_object() -> None:
    templates = {p.name: p.read_text() for p in (CHART / "templates").glob("*.yaml")}
    per_process = "range $name, $proc := .Values.processes"
    assert per_process in templates["deployment.yaml"]
    assert "kind: Deployment" in templates["deployment.yaml"]
    assert per_process in templates["service.yaml"]
    scaled = templates["scaledobject.yaml"]
    assert per_process in scaled
    assert "kind: ScaledObject" in scaled
    assert "if $proc.durables" in scaled
    assert "type: nats-jetstream" in scaled
    assert "consumer: {{ .name | quote }}" in scaled
    assert "stream: {{ .stream | quote }}" in scaled
    assert "kind: ServiceMonitor" in templates["servicemonitor.yaml"]


def test_templates_are_balanced_and_plain_yaml_outside_actions() -> None:
    opener = re.compile(r"\{\{-?\s*(if|range|with|define)\b")
    closer = re.compile(r"\{\{-?\s*end\s*-?\}\}")
    for path in sorted((CHART / "templates").iterdir()):
        text = path.read_text()
        assert len(opener.findall(text)) == len(closer.findall(text)), path.name
        if path.suffix != ".yaml":
            continue
        # With every action replaced by a placeholder scalar, each document must parse.
        stripped = re.sub(r"^\s*\{\{-?[^}]*\}\}\s*$\n?", "", text, flags=re.M)
        stripped = re.sub(r"\{\{-?[^}]*\}\}", "x", stripped)
        for document in yaml.safe_load_all(stripped):
            assert document is None or isinstance(document, dict), path.name
