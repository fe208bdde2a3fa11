"""Vault's Kubernetes auth as the Helm chart sets it up, against a real OpenBao.

The roles are the chart's own (its rendered vault-roles ConfigMap), written by the bootstrap Job's
command; the processes log in with the client the services use. The one part that is not real is
the Kubernetes API: OpenBao asks it, through TokenReview, whether a service account token is live
and whose it is, and tests/fakes/kubernetes_api.py answers that request as the API server does.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
from pydantic import ValidationError

from infra.kubernetes_auth import DATABASE_POLICY, DATABASE_SECRET
from infra.settings import VaultSettings
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.vault import VaultClient, VaultError
from tests.fakes.kubernetes_api import FakeKubernetesApi
from tests.observability.test_helm_chart import containers_of, env_of, fullname, render

NAMESPACE = "orchestrator"
RELEASE = "codegen-orchestrator"
AUDIENCE = "vault"


@dataclass
class KubernetesVault:
    """OpenBao with the chart's roles at `mount`, reviewing tokens with `api`."""

    openbao: BootstrappedOpenBao
    api: FakeKubernetesApi
    mount: str
    bootstrap: subprocess.CompletedProcess[str]
    rendered: list[dict[str, object]]

    def account(self, process: str) -> str:
        return f"{fullname(RELEASE)}-{process.replace('_', '-')}"

    def settings(self, role: str, token_file: Path) -> VaultSettings:
        return VaultSettings(
            addr=self.openbao.addr,
            auth="kubernetes",
            kubernetes_role=role,
            kubernetes_token_file=token_file,
            kubernetes_mount=self.mount,
        )

    def client(self, role: str, token_file: Path) -> VaultClient:
        return VaultClient.from_settings(self.settings(role, token_file))

    def root(self) -> hvac.Client:
        return hvac.Client(url=self.openbao.addr, token=self.openbao.root_token)

    def store(self, path: str, data: dict[str, str]) -> None:
        """Write a KV secret as an operator would."""
        self.root().secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, mount_point="secret"
        )


def _environment(**settings: str) -> dict[str, str]:
    """This interpreter's environment without ORCH_* settings, plus `settings`."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return {**inherited, **settings}


def _run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m ARGV` in a clean environment plus `env`, as a pod would run it."""
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env=_environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def kubernetes_vault(
    openbao: BootstrappedOpenBao, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubernetesVault]:
    # A mount of its own: the session's OpenBao serves other tests too.
    mount = f"kubernetes-{uuid.uuid4().hex[:8]}"
    with FakeKubernetesApi() as api:
        # OpenBao runs outside any pod here, as a Vault outside the cluster does: it is given the
        # API server's CA, and reviews each token with that token itself (no reviewer token).
        config = {
            "kubernetes_host": api.url,
            "kubernetes_ca_cert": api.ca_pem,
            "disable_local_ca_jwt": True,
        }
        values = {"vault": {"kubernetesAuth": {"mount": mount, "config": config}}}
        rendered = [m for items in render(values, namespace=NAMESPACE).values() for m in items]
        (roles_map,) = [m for m in rendered if m["metadata"]["name"].endswith("-vault-roles")]
        roles = tmp_path_factory.mktemp("vault-roles") / "roles.json"
        roles.write_text(roles_map["data"]["roles.json"])
        # What the chart's bootstrap Job runs, with the operator's token.
        bootstrap = _run(
            "infra.kubernetes_auth",
            str(roles),
            ORCH_VAULT__ADDR=openbao.addr,
            ORCH_VAULT__TOKEN=openbao.root_token,
        )
        yield KubernetesVault(openbao, api, mount, bootstrap, rendered)


def token_file(kv: KubernetesVault, directory: Path, process: str, **where: str) -> Path:
    """A projected token of `process`'s ServiceAccount, as the kubelet writes it in the pod."""
    namespace = where.get("namespace", NAMESPACE)
    audience = where.get("audience", AUDIENCE)
    path = directory / f"{process}-{uuid.uuid4().hex[:6]}.token"
    path.write_text(kv.api.issue(namespace, kv.account(process), audience=audience))
    return path


def test_the_bootstrap_writes_a_role_per_process(kubernetes_vault: KubernetesVault) -> None:
    kv = kubernetes_vault
    # The fixture ran what the chart's Job runs: this module on the ConfigMap's roles.json.
    job = next(m for m in kv.rendered if m["metadata"]["name"].endswith("-vault-bootstrap"))
    container = containers_of(job)["vault-bootstrap"]
    (mount,) = container["volumeMounts"]
    assert container["command"] == [
        "python",
        "-m",
        "infra.kubernetes_auth",
        f"{mount['mountPath']}/roles.json",
    ]
    assert kv.bootstrap.returncode == 0, kv.bootstrap.stderr
    written = {line.split("/")[-1].split()[0] for line in kv.bootstrap.stdout.splitlines()}
    assert {"analyst", "deployer", "scheduler", "migrate"} <= written
    role = kv.root().read(f"auth/{kv.mount}/role/deployer")["data"]
    assert role["bound_service_account_names"] == [kv.account("deployer")]
    assert role["bound_service_account_namespaces"] == [NAMESPACE]
    assert role["audience"] == AUDIENCE
    assert role["token_policies"] == ["deployer", DATABASE_POLICY]


async def test_a_process_logs_in_as_its_service_account_and_reads_only_its_own(
    kubernetes_vault: KubernetesVault, tmp_path: Path
) -> None:
    kv = kubernetes_vault
    url = f"postgresql+psycopg://orchestrator:pw-{uuid.uuid4().hex}@postgres:5432/orchestrator"
    kv.store(DATABASE_SECRET, {"url": url})

    analyst = kv.client("analyst", token_file(kv, tmp_path, "analyst"))
    await analyst.login()
    looked_up = analyst._client.auth.token.lookup_self()["data"]
    assert looked_up["policies"] == ["analyst", DATABASE_POLICY]
    assert looked_up["meta"]["service_account_namespace"] == NAMESPACE
    assert await analyst.read_secret(DATABASE_SECRET) == {"url": url}
    with pytest.raises(VaultError, match="may not read secret/platform/nats/deployer"):
        await analyst.read_secret("platform/nats/deployer")
    # OpenBao asked the cluster, for the audience the role requires.
    assert kv.api.reviews[-1]["audiences"] == [AUDIENCE]

    # The scheduler does not use PostgreSQL, so its role cannot read the URL.
    scheduler = kv.client("scheduler", token_file(kv, tmp_path, "scheduler"))
    await scheduler.login()
    with pytest.raises(VaultError, match="may not read secret/platform/database"):
        await scheduler.read_secret(DATABASE_SECRET)


@pytest.mark.parametrize(
    ("process", "where"),
    [
        # Another process's ServiceAccount; the same name in another namespace; a token made
        # for the API server rather than for Vault.
        ("deployer", {}),
        ("analyst", {"namespace": "elsewhere"}),
        ("analyst", {"audience": "https://kubernetes.default.svc"}),
    ],
    ids=["other-account", "other-namespace", "other-audience"],
)
async def test_a_token_the_role_is_not_bound_to_is_refused(
    kubernetes_vault: KubernetesVault, tmp_path: Path, process: str, where: dict[str, str]
) -> None:
    client = kubernetes_vault.client(
        "analyst", token_file(kubernetes_vault, tmp_path, process, **where)
    )
    with pytest.raises(VaultError, match=r"Kubernetes login to .* as role 'analyst' failed"):
        await client.login()


async def test_a_token_the_cluster_no_longer_knows_is_refused(
    kubernetes_vault: KubernetesVault, tmp_path: Path
) -> None:
    path = token_file(kubernetes_vault, tmp_path, "analyst")
    kubernetes_vault.api.revoke(path.read_text())  # its pod was deleted
    with pytest.raises(VaultError, match="permission denied"):
        await kubernetes_vault.client("analyst", path).login()


async def test_a_lapsed_vault_token_logs_in_again_with_the_rotated_projected_token(
    kubernetes_vault: KubernetesVault, tmp_path: Path
) -> None:
    kv = kubernetes_vault
    path = token_file(kv, tmp_path, "deployer")
    deployer = kv.client("deployer", path)
    await deployer.login()
    # The Vault token lapses; meanwhile the kubelet replaced the projected token, and the old one
    # is no longer valid.
    kv.root().auth.token.revoke(deployer._client.token)
    old = path.read_text()
    path.write_text(kv.api.issue(NAMESPACE, kv.account("deployer"), audience=AUDIENCE))
    kv.api.revoke(old)
    kv.store(DATABASE_SECRET, {"url": "postgresql+psycopg://after-rotation@postgres/db"})
    assert await deployer.read_secret(DATABASE_SECRET) == {
        "url": "postgresql+psycopg://after-rotation@postgres/db"
    }
    assert kv.api.reviews[-1]["token"] == path.read_text()


def test_the_init_container_writes_the_database_url_to_a_private_file(
    kubernetes_vault: KubernetesVault, tmp_path: Path
) -> None:
    kv = kubernetes_vault
    url = f"postgresql+psycopg://orchestrator:pw-{uuid.uuid4().hex}@postgres:5432/orchestrator"
    kv.store(DATABASE_SECRET, {"url": url})
    deployment = next(
        m for m in kv.rendered if m["metadata"]["name"] == f"{fullname(RELEASE)}-coordinator"
    )
    init = containers_of(deployment)["database-url"]
    out = tmp_path / "database-url"
    # The init container's own command and environment, pointed at this machine's paths.
    assert init["command"][:2] == ["python", "-m"]
    module_and_args = init["command"][2:-1]
    env = {
        **env_of(init),
        "ORCH_VAULT__ADDR": kv.openbao.addr,
        "ORCH_VAULT__KUBERNETES_TOKEN_FILE": str(token_file(kv, tmp_path, "coordinator")),
    }
    result = _run(*module_and_args, str(out), **env)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == url
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert url not in result.stdout + result.stderr

    # With the scheduler's role the same command fails and says why, leaking nothing.
    env["ORCH_VAULT__KUBERNETES_ROLE"] = "scheduler"
    env["ORCH_VAULT__KUBERNETES_TOKEN_FILE"] = str(token_file(kv, tmp_path, "scheduler"))
    refused = _run(*module_and_args, str(tmp_path / "refused"), **env)
    assert refused.returncode == 1
    assert "may not read secret/platform/database" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_the_commands_say_what_is_missing(openbao: BootstrappedOpenBao, tmp_path: Path) -> None:
    roles = tmp_path / "roles.json"
    roles.write_text('{"mount": "kubernetes"}')
    no_token = _run("infra.kubernetes_auth", str(roles), ORCH_VAULT__ADDR=openbao.addr)
    assert no_token.returncode == 1
    assert "set ORCH_VAULT__TOKEN" in no_token.stderr
    operator = {"ORCH_VAULT__ADDR": openbao.addr, "ORCH_VAULT__TOKEN": openbao.root_token}
    malformed = _run("infra.kubernetes_auth", str(roles), **operator)
    assert malformed.returncode == 1
    assert "not a roles file" in malformed.stderr and "vault-roles ConfigMap" in malformed.stderr

    path = f"platform/absent-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "database-url"
    absent = _run("infra.vault_file", path, "url", str(out), **operator)
    assert absent.returncode == 1
    assert f"bao kv put -mount=secret {path} url=" in absent.stderr
    assert not out.exists()


async def test_kubernetes_auth_needs_a_role_and_a_readable_token(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ORCH_VAULT__KUBERNETES_ROLE"):
        VaultSettings(auth="kubernetes")
    missing = tmp_path / "no-token"
    client = VaultClient.from_settings(
        VaultSettings(auth="kubernetes", kubernetes_role="analyst", kubernetes_token_file=missing)
    )
    with pytest.raises(VaultError, match=f"{missing} cannot be read.*projected volume"):
        await client.login()
