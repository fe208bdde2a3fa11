"""The chart renders, and the API server would accept every object it renders.

helm-python-sdk renders with Helm's own engine (libhelm: no helm binary, no cluster), the NATS
subchart included from its vendored copy in charts/nats. Core kinds are checked offline by
kubernetes-validate against the schemas of one Kubernetes version, strictly: a field the kind does
not have fails here as the API server's strict field validation (kubectl's default) refuses it,
where a lax check would let a typo in values silently drop a setting. KEDA's and the Prometheus
operator's kinds are checked against the openAPIV3Schema of their CRDs (tests/data/crds), made
strict the same way.
"""

from __future__ import annotations

import copy
import functools
import posixpath
import re
from collections import Counter
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from infra.kubernetes_auth import DATABASE_POLICY, RolesFile, policy_text
from infra.settings import KUBERNETES_TOKEN_FILE

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "codegen-orchestrator"
CRDS = REPO / "tests" / "data" / "crds"
RULES = REPO / "infra" / "prometheus" / "rules.yml"
RELEASE = "codegen-orchestrator"
# Not `default`: a name that leaked into a template unrendered would point there.
NAMESPACE = "orchestrator"
# The oldest minor the chart supports: schemas only grow, so a field valid here is valid later.
KUBERNETES_VERSION = "1.30.0"

Manifest = dict[str, Any]

# A cluster without KEDA or the Prometheus operator, and a NATS run outside the release.
WITHOUT_OPERATORS: dict[str, Any] = {
    "keda": {"enabled": False},
    "nats": {"enabled": False},
    "metrics": {"serviceMonitor": {"enabled": False}},
    "migrations": {"enabled": False},
    "natsConnection": {
        "existingSecret": "external-nats",
        "monitorUrls": "http://nats-a.nats.svc:8222,http://nats-b.nats.svc:8222",
    },
}
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "without-operators": WITHOUT_OPERATORS,
    "without-prometheus-rule": {
        "metrics": {"prometheusRule": {"enabled": False, "labels": {"release": "kps"}}}
    },
}


def render(
    values: dict[str, Any], *, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, list[Manifest]]:
    """The objects of each rendered template, as `helm template` would print them.

    NOTES.txt is text for the person installing, not a manifest, so it is left out.
    """
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=release, namespace=namespace)
    return {
        path: [document for document in yaml.safe_load_all(text) if document]
        for path, text in rendered.items()
        if path.endswith(".yaml")
    }


@functools.cache
def _rendered(variant: str) -> dict[str, list[Manifest]]:
    return render(VARIANTS[variant])


def manifests(variant: str) -> list[Manifest]:
    """A fresh copy of every object the variant renders (tests may change what they get)."""
    return copy.deepcopy([m for objects in _rendered(variant).values() for m in objects])


def only(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    (found,) = [m for m in objects if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    return found


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every object refusing fields it does not declare.

    The API server prunes unknown fields of a custom resource, and refuses them under strict field
    validation; JSON Schema allows them unless told. Objects that preserve unknown fields, or give
    a schema for additional ones (label maps), stay as they are.
    """
    closed = dict(schema)
    if "properties" in schema:
        closed["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            closed["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            closed[key] = _closed(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            closed[key] = [_closed(s) for s in schema[key]]
    return closed


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    """A validator per (apiVersion, kind) that a vendored CRD serves.

    openAPIV3Schema is OpenAPI 3.0's dialect of JSON Schema draft 4 (boolean exclusiveMinimum,
    x-kubernetes-* extensions that a validator ignores). Patterns are Go's RE2 in the API server;
    jsonschema compiles one only when a manifest sets that field, and ours set none that Python's
    re reads differently.
    """
    validators = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = _closed(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(
                    schema
                )
    return validators


def problems(manifest: Manifest) -> list[str]:
    """Why the API server would refuse the object: empty when it would accept it.

    A kind with neither a core schema nor a vendored CRD fails the test (SchemaNotFoundError):
    a new kind in the chart brings its CRD to tests/data/crds.
    """
    validator = crd_validators().get((manifest["apiVersion"], manifest["kind"]))
    if validator is not None:
        return [
            f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(manifest)
        ]
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"]
    return []


def refused(objects: list[Manifest]) -> dict[str, list[str]]:
    found = {f"{m['kind']}/{m['metadata']['name']}": problems(m) for m in objects}
    return {name: reasons for name, reasons in found.items() if reasons}


def processes() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())["processes"]
    return loaded


def test_the_nats_subchart_is_vendored_at_the_declared_version() -> None:
    (dependency,) = helm.dependency_list(CHART)
    # "unpacked": a chart directory in charts/ whose version meets the constraint in Chart.yaml.
    assert (dependency["name"], dependency["status"]) == ("nats", "unpacked")
    with helm.Chart.load(CHART) as chart:
        (loaded,) = chart.dependencies
    assert loaded["name"] == "nats"
    assert loaded["version"].startswith("1.3.")


def test_the_chart_lints_clean_with_its_subchart() -> None:
    report = helm.lint(
        CHART, strict=True, with_subcharts=True, kube_version=f"v{KUBERNETES_VERSION}"
    )
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; info (a missing icon) is fine.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_is_valid(variant: str) -> None:
    objects = manifests(variant)
    assert objects
    assert refused(objects) == {}


def test_defaults_render_the_processes_nats_and_the_monitoring() -> None:
    procs = processes()
    consumers = [name for name, proc in procs.items() if proc["durables"]]
    kinds = Counter(m["kind"] for m in manifests("defaults"))
    assert kinds == {
        # One per process; nats-box is off (it would connect with no user).
        "Deployment": len(procs),
        # One per process, and the subchart's client and headless Services.
        "Service": len(procs) + 2,
        # One per process and the migration's: each the identity of one Vault role.
        "ServiceAccount": len(procs) + 1,
        "ScaledObject": len(consumers),
        # Ours, the Vault roles and the NATS server config. No Secret: credentials are in Vault.
        "ConfigMap": 3,
        "StatefulSet": 1,
        "PodDisruptionBudget": 1,
        # The Vault roles' bootstrap and the migration.
        "Job": 2,
        "ServiceMonitor": 1,
        "PrometheusRule": 1,
    }


def test_keda_scales_every_consumer_and_only_consumers() -> None:
    objects = manifests("defaults")
    deployments = {m["metadata"]["name"]: m for m in objects if m["kind"] == "Deployment"}
    for name, proc in processes().items():
        component = name.replace("_", "-")
        deployment = deployments[f"{RELEASE}-{component}"]
        if not proc["durables"]:
            assert deployment["spec"]["replicas"] == proc.get("replicas", 1), name
            continue
        # KEDA owns the replica count; a fixed one would fight it on every upgrade.
        assert "replicas" not in deployment["spec"], name
        scaled = only(objects, "ScaledObject", f"{RELEASE}-{component}")
        assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        triggers = [
            (t["metadata"]["stream"], t["metadata"]["consumer"]) for t in scaled["spec"]["triggers"]
        ]
        assert triggers == [(d["stream"], d["name"]) for d in proc["durables"]], name


def test_without_operators_nothing_needs_keda_prometheus_or_the_subchart() -> None:
    rendered = render(WITHOUT_OPERATORS)
    assert not [path for path in rendered if "/charts/nats/" in path and rendered[path]]
    objects = [m for items in rendered.values() for m in items]
    kinds = Counter(m["kind"] for m in objects)
    assert kinds == {
        "Deployment": len(processes()),
        "Service": len(processes()),
        "ServiceAccount": len(processes()),
        "ConfigMap": 2,
        "Job": 1,
    }
    for deployment in (m for m in objects if m["kind"] == "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        url = next(e for e in container["env"] if e["name"] == "ORCH_NATS__URL")
        assert url["valueFrom"]["secretKeyRef"]["name"] == "external-nats"
        monitors = env_of(container).get("ORCH_LAG_EXPORTER__MONITOR_URLS")
        if monitors is not None:
            assert monitors == WITHOUT_OPERATORS["natsConnection"]["monitorUrls"]
        assert deployment["spec"]["replicas"] >= 1


def containers_of(pod_owner: Manifest) -> dict[str, Manifest]:
    spec = pod_owner["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def env_of(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def fullname(release: str) -> str:
    """The chart's prefix of its object names (`orchestrator.fullname`)."""
    return release if "codegen-orchestrator" in release else f"{release}-codegen-orchestrator"


def roles_file(objects: list[Manifest], release: str = RELEASE) -> RolesFile:
    config = only(objects, "ConfigMap", f"{fullname(release)}-vault-roles")
    return RolesFile.parse(config["data"]["roles.json"])


def test_every_process_logs_in_to_vault_as_its_own_service_account() -> None:
    objects = manifests("defaults")
    accounts = {m["metadata"]["name"]: m for m in objects if m["kind"] == "ServiceAccount"}
    roles = {role.name: role for role in roles_file(objects).roles}
    assert set(roles) == {*processes(), "migrate"}
    pods = [m for m in objects if m["kind"] in ("Deployment", "Job")]
    seen: set[str] = set()
    for owner in pods:
        spec = owner["spec"]["template"]["spec"]
        # Nothing here calls the API server, so its token is not mounted at all.
        assert spec["automountServiceAccountToken"] is False, owner["metadata"]["name"]
        containers = containers_of(owner)
        if "vault-bootstrap" in containers:
            # The one pod with an operator's token: it logs in with nothing else.
            assert "serviceAccountName" not in spec
            continue
        account = spec["serviceAccountName"]
        assert account in accounts and account not in seen, account
        seen.add(account)
        (token,) = [v for v in spec["volumes"] if v["name"] == "vault-token"]
        (source,) = token["projected"]["sources"]
        assert source["serviceAccountToken"]["audience"] == roles_file(objects).audience
        vault_env = [env_of(c) for c in containers.values() if "ORCH_VAULT__AUTH" in env_of(c)]
        assert vault_env, owner["metadata"]["name"]
        for env in vault_env:
            assert env["ORCH_VAULT__AUTH"] == "kubernetes"
            role = roles[env["ORCH_VAULT__KUBERNETES_ROLE"]]
            # The role admits this pod's ServiceAccount in this namespace and nothing else.
            assert (role.service_account, role.namespace) == (account, NAMESPACE)
        for container in containers.values():
            mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
            if "ORCH_VAULT__AUTH" in env_of(container):
                assert mounts["vault-token"] == str(KUBERNETES_TOKEN_FILE.parent)
                assert KUBERNETES_TOKEN_FILE.name == source["serviceAccountToken"]["path"]
    assert seen == set(accounts)


def test_only_the_engineer_runs_in_a_user_namespace_able_to_build_its_sandbox() -> None:
    """The engineer's bubblewrap sandbox needs new namespaces and a fresh /proc inside its pod
    (what compose grants it, run for real in tests/engineer/test_compose_sandbox.py); it gets
    them in a pod user namespace, and no other pod relaxes anything."""
    for owner in manifests("defaults"):
        if owner["kind"] != "Deployment":
            continue
        spec = owner["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        if owner["metadata"]["name"].endswith("-engineer"):
            assert spec["hostUsers"] is False
            assert context["procMount"] == "Unmasked"
            assert context["seccompProfile"] == {"type": "Unconfined"}
        else:
            assert "hostUsers" not in spec, owner["metadata"]["name"]
            assert not {"procMount", "seccompProfile", "appArmorProfile"} & set(context)


def test_each_vault_role_carries_its_process_policy_and_the_database_only_if_used() -> None:
    objects = manifests("defaults")
    roles = {role.name: role for role in roles_file(objects).roles}
    for name, proc in processes().items():
        uses_database = proc.get("database", True)
        # The same policy file as the process's AppRole in the local stack.
        assert roles[name].policies[0] == name
        assert (DATABASE_POLICY in roles[name].policies) == uses_database, name
        deployment = only(objects, "Deployment", f"{RELEASE}-{name.replace('_', '-')}")
        containers = containers_of(deployment)
        main = env_of(containers[name.replace("_", "-")])
        assert ("database-url" in containers) == uses_database, name
        assert ("ORCH_DATABASE__URL_FILE" in main) == uses_database, name
        if uses_database:
            init = containers["database-url"]
            assert init["command"][-1] == main["ORCH_DATABASE__URL_FILE"]
            assert env_of(init)["ORCH_VAULT__KUBERNETES_ROLE"] == name
    assert roles["migrate"].policies == (DATABASE_POLICY,)
    for role in roles.values():
        for policy in role.policies:
            assert policy_text(policy)  # a policy file exists for every name a role carries


def test_no_secret_or_credential_is_rendered() -> None:
    """Vault holds every credential; the chart renders no Secret and no AppRole id."""
    for variant in VARIANTS:
        objects = manifests(variant)
        assert [m["metadata"]["name"] for m in objects if m["kind"] == "Secret"] == []
        for owner in (m for m in objects if m["kind"] in ("Deployment", "Job", "StatefulSet")):
            for container in containers_of(owner).values():
                env = env_of(container)
                assert not {"ORCH_VAULT__ROLE_ID", "ORCH_VAULT__SECRET_ID"} & set(env)
                assert "ORCH_DATABASE__URL" not in env
                refs = {k for k, v in env.items() if isinstance(v, dict) and "secretKeyRef" in v}
                # The operator's bootstrap token (read by that Job only), and a NATS URL that
                # an operator chose to keep in a Secret of theirs.
                assert refs <= {"ORCH_VAULT__TOKEN", "ORCH_NATS__URL"}, refs
                if "ORCH_VAULT__TOKEN" in refs:
                    assert container["name"] == "vault-bootstrap"
        config = only(objects, "ConfigMap", f"{RELEASE}-config")["data"]
        assert not [k for k in config if "DATABASE" in k or "VAULT__TOKEN" in k]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (key, *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize(("release", "namespace"), [(RELEASE, "orchestrator"), ("orch", "ci-7")])
def test_every_address_follows_the_release_and_its_namespace(release: str, namespace: str) -> None:
    objects = [
        m for items in render({}, release=release, namespace=namespace).values() for m in items
    ]
    assert not [s for s in _strings(objects) if ".default.svc" in s or ":default:" in s]
    services = {m["metadata"]["name"] for m in objects if m["kind"] == "Service"}
    nats = only(objects, "StatefulSet")["metadata"]["name"]
    headless = only(objects, "StatefulSet")["spec"]["serviceName"]
    config = next(m for m in objects if m["kind"] == "ConfigMap" and "ORCH_NATS__URL" in m["data"])
    client = config["data"]["ORCH_NATS__URL"]
    # The URLs name the subchart's own Services and pods, in the release's namespace.
    assert client == f"nats://{nats}.{namespace}.svc:4222" and nats in services
    assert headless in services
    for scaled in (m for m in objects if m["kind"] == "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            endpoint = trigger["metadata"]["natsServerMonitoringEndpoint"]
            assert endpoint == f"{headless}.{namespace}.svc.cluster.local:8222"
    exporter = only(objects, "Deployment", f"{fullname(release)}-lag-exporter")
    (container,) = exporter["spec"]["template"]["spec"]["containers"]
    monitors = env_of(container)["ORCH_LAG_EXPORTER__MONITOR_URLS"].split(",")
    replicas = only(objects, "StatefulSet")["spec"]["replicas"]
    assert monitors == [
        f"http://{nats}-{i}.{headless}.{namespace}.svc:8222" for i in range(replicas)
    ]
    assert {role.namespace for role in roles_file(objects, release).roles} == {namespace}


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"keda": {"enabled": True}}, "keda.natsMonitoringEndpoint"),
        ({"natsConnection": {"existingSecret": ""}}, "natsConnection.url"),
        ({"natsConnection": {"monitorUrls": ""}}, "natsConnection.monitorUrls"),
    ],
    ids=["keda-endpoint", "nats-url", "monitor-urls"],
)
def test_without_the_subchart_each_nats_address_must_be_given(
    values: dict[str, Any], setting: str
) -> None:
    """No address may silently point at a NATS subchart that is not installed."""
    merged = copy.deepcopy(WITHOUT_OPERATORS)
    for key, value in values.items():
        merged[key] = {**merged[key], **value}
    with pytest.raises(helm.HelmRenderError, match=f"nats.enabled is false: set {setting}"):
        render(merged)


def test_nats_config_includes_the_users_and_keeps_jetstream_on_files() -> None:
    objects = manifests("defaults")
    conf = only(objects, "ConfigMap", f"{RELEASE}-nats-config")["data"]["nats.conf"]
    assert re.search(r"^\s*include \./auth/accounts\.conf;$", conf, re.M), conf
    assert '"store_dir": "/data"' in conf
    assert '"max_file_store": 50Gi' in conf
    assert '"max_memory_store": 0' in conf

    nats = only(objects, "StatefulSet")
    assert nats["spec"]["replicas"] == 3
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    pod = nats["spec"]["template"]["spec"]
    users = next(v for v in pod["volumes"] if v["name"] == "nats-users")
    assert users["secret"]["secretName"] == "codegen-orchestrator-nats-users"
    server = next(c for c in pod["containers"] if c["name"] == "nats")
    config_file = server["args"][server["args"].index("--config") + 1]
    # NATS resolves an include against the including file's directory.
    auth_dir = posixpath.join(posixpath.dirname(config_file), "auth")
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert mounts["nats-users"] == auth_dir
    assert mounts[claim["metadata"]["name"]] == "/data"
    # The reloader watches the included file too, so it must see the same mount.
    reloader = next(c for c in pod["containers"] if c["name"] == "reloader")
    assert {"name": "nats-users", "mountPath": auth_dir, "readOnly": True} in reloader[
        "volumeMounts"
    ]


def test_the_prometheus_rule_carries_the_shipped_rules_unchanged() -> None:
    # Helm packages nothing outside the chart, so the chart keeps a copy that must not drift.
    assert (CHART / "files" / "prometheus" / "rules.yml").read_bytes() == RULES.read_bytes()
    rule = only(manifests("defaults"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    # Prometheus's own templates pass through Helm's untouched.
    annotations = rule["spec"]["groups"][0]["rules"][0]["annotations"]
    assert "{{ $labels.process }}" in annotations["summary"]


def test_the_prometheus_rule_follows_the_service_monitor_and_its_flag() -> None:
    objects = manifests("without-prometheus-rule")
    assert [m for m in objects if m["kind"] == "PrometheusRule"] == []
    assert only(objects, "ServiceMonitor")
    labelled = render({"metrics": {"prometheusRule": {"labels": {"release": "kps"}}}})
    (rule,) = labelled["codegen-orchestrator/templates/prometheusrule.yaml"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    alone = render({"metrics": {"serviceMonitor": {"enabled": False}}})
    assert alone["codegen-orchestrator/templates/prometheusrule.yaml"] == []


@pytest.mark.parametrize(
    ("values", "kinds", "reason"),
    [
        # A misspelt probe field would silently be dropped by a lax check.
        ({"probes": {"liveness": {"periodSecond": 10}}}, {"Deployment"}, "periodSecond"),
        ({"processes": {"api": {"httpPort": "eighty"}}}, {"Deployment", "Service"}, "'eighty'"),
        ({"keda": {"pollingInterval": "15s"}}, {"ScaledObject"}, "'15s'"),
        (
            {"metrics": {"serviceMonitor": {"interval": "15 seconds"}}},
            {"ServiceMonitor"},
            "15 s",
        ),
    ],
    ids=["probe-typo", "port-not-a-number", "keda-interval-as-duration", "scrape-interval"],
)
def test_broken_values_render_objects_the_api_server_refuses(
    values: dict[str, Any], kinds: set[str], reason: str
) -> None:
    objects = [m for items in render(values).values() for m in items]
    bad = refused(objects)
    assert bad, "the broken values passed validation"
    assert {name.split("/")[0] for name in bad} == kinds
    assert all(any(reason in r for r in reasons) for reasons in bad.values()), bad


def test_crd_schemas_refuse_a_rule_without_expr_and_unknown_fields() -> None:
    rule = only(manifests("defaults"), "PrometheusRule")
    assert problems(rule) == []
    first = rule["spec"]["groups"][0]["rules"][0]
    first["for_"] = first.pop("for")
    del first["expr"]
    reasons = problems(rule)
    assert any("'expr' is a required property" in r for r in reasons), reasons
    assert any("'for_' was unexpected" in r for r in reasons), reasons


def test_crd_schemas_refuse_a_missing_required_field_and_unknown_fields() -> None:
    monitor = only(manifests("defaults"), "ServiceMonitor")
    assert problems(monitor) == []
    (endpoint,) = monitor["spec"]["endpoints"]
    endpoint["scrapeInterval"] = endpoint.pop("interval")
    del monitor["spec"]["selector"]
    reasons = problems(monitor)
    assert any("'selector' is a required property" in r for r in reasons), reasons
    assert any("'scrapeInterval' was unexpected" in r for r in reasons), reasons
