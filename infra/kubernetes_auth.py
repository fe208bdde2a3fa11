"""`python -m infra.kubernetes_auth ROLES`: Vault's Kubernetes auth roles of a Helm install.

In Kubernetes no process holds a long-lived Vault credential. Each runs under its own service
account and logs in with that pod's projected token (audience `vault`) against Vault's
`kubernetes` auth method; Vault asks the cluster's TokenReview API whether the token is live and
whose it is, and issues a token only to the role bound to that service account and namespace.
This writes those roles. ROLES is the JSON the chart renders into its `vault-roles` ConfigMap
(one entry per process, plus `migrate`):

    {"mount": "kubernetes", "audience": "vault", "config": {},
     "roles": [{"name": "analyst", "serviceAccount": "codegen-orchestrator-analyst",
                "namespace": "orchestrator", "policies": ["analyst", "database-url"]}]}

For each role it writes the policies it names (a process's own from
infra/openbao/policies/<process>.hcl, the files the local stack's AppRoles use, so a process gets
exactly the access it has there; `database-url` is this module's: read `platform/database`, the
PostgreSQL URL with its password, for the processes that use the database), then
`auth/<mount>/role/<name>` with the same token settings as the AppRoles. It enables the auth method
if it is missing and, when `config` is not empty, writes it to `auth/<mount>/config` (e.g.
`kubernetes_host: https://kubernetes.default.svc` for a Vault in the cluster, which reviews tokens
with its own service account); otherwise the method's config is left as the operator wrote it.
Idempotent: the chart runs it as a Job before every install and upgrade, with an operator's token
in ORCH_VAULT__TOKEN (the one Secret an operator creates by hand).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions

from infra.settings import get_settings
from infra.stack.openbao_server import POLICIES_DIR, read_policy

#: The policy of every process that uses PostgreSQL, besides its own.
DATABASE_POLICY = "database-url"
DATABASE_SECRET = "platform/database"  # noqa: S105 -- a Vault path, not a secret
DATABASE_POLICY_TEXT = f"""\
# Processes that use PostgreSQL: the URL with its password ({DATABASE_SECRET}, key `url`),
# written to a private in-memory file by the pod's init container (infra/vault_file.py).
path "secret/data/{DATABASE_SECRET}" {{
  capabilities = ["read"]
}}
"""


@dataclass(frozen=True)
class KubernetesRole:
    """One Vault role: who may log in as it (a service account in a namespace), and its access."""

    name: str
    service_account: str
    namespace: str
    policies: tuple[str, ...]


@dataclass(frozen=True)
class RolesFile:
    """What the chart's `vault-roles` ConfigMap holds."""

    mount: str
    audience: str
    config: dict[str, Any]
    roles: tuple[KubernetesRole, ...]

    @classmethod
    def parse(cls, text: str) -> RolesFile:
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(
                mount=data["mount"],
                audience=data["audience"],
                config=dict(data.get("config") or {}),
                roles=tuple(
                    KubernetesRole(
                        name=role["name"],
                        service_account=role["serviceAccount"],
                        namespace=role["namespace"],
                        policies=tuple(role["policies"]),
                    )
                    for role in data["roles"]
                ),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"not a roles file ({error!r}): expected the JSON of the chart's vault-roles "
                "ConfigMap: mount, audience, roles[name, serviceAccount, namespace, policies]"
            ) from error


def policy_text(name: str, policies_dir: Path = POLICIES_DIR) -> str:
    """The HCL of policy `name`: this module's database policy, or a process's policy file."""
    if name == DATABASE_POLICY:
        return DATABASE_POLICY_TEXT
    return read_policy(policies_dir, name)


def apply_roles(
    client: hvac.Client, roles: RolesFile, policies_dir: Path = POLICIES_DIR
) -> list[str]:
    """Write every role and the policies it names; returns the role names written."""
    texts = {name: policy_text(name, policies_dir) for r in roles.roles for name in r.policies}
    if f"{roles.mount}/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("kubernetes", path=roles.mount)
    if roles.config:
        client.write_data(f"auth/{roles.mount}/config", data=roles.config)
    for name, text in sorted(texts.items()):
        client.sys.create_or_update_policy(name=name, policy=text)
    for role in roles.roles:
        client.write_data(
            f"auth/{roles.mount}/role/{role.name}",
            data={
                "bound_service_account_names": [role.service_account],
                "bound_service_account_namespaces": [role.namespace],
                # Only a token projected for Vault logs in: a pod's default API token cannot.
                "audience": roles.audience,
                "token_policies": list(role.policies),
                # As the AppRoles (infra/stack/openbao_server.py): each policy grants its own
                # token's lookup and renewal, and nothing of the default policy is needed.
                "token_no_default_policy": True,
                "token_type": "service",
                "token_ttl": "1h",
                "token_max_ttl": "24h",
            },
        )
    return [role.name for role in roles.roles]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.kubernetes_auth", description=__doc__)
    parser.add_argument("roles", type=Path, help="the roles file (the vault-roles ConfigMap)")
    args = parser.parse_args(argv)
    settings = get_settings().vault
    token = settings.token.get_secret_value()
    if not token:
        raise SystemExit(
            "set ORCH_VAULT__TOKEN to a token that may write policies and auth/kubernetes roles "
            "(an operator's) and ORCH_VAULT__ADDR to the Vault address"
        )
    try:
        roles = RolesFile.parse(args.roles.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"{args.roles}: {error}") from error
    # hvac reads VAULT_ADDR only from the environment; the URL is always passed explicitly.
    client = hvac.Client(url=settings.addr, token=token)
    try:
        written = apply_roles(client, roles)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from error
    except hvac.exceptions.VaultError as error:
        raise SystemExit(f"Vault at {settings.addr} refused the roles: {error}") from error
    for name in written:
        print(f"role {roles.mount}/{name} written")


if __name__ == "__main__":
    main()
