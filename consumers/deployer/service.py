"""The deploy step: resolve the server and every secret, run the playbook, report the outcome.

Triggered by `DeployRequested` from the coordinator once code and resources are ready. The
playbook does the work on the server (checkout, venv or compose, `.env`, supervisor, atomic
`current` switch, health check, rollback); this service prepares what it needs from Vault and
the inventory, turns its outcome into events, and records the release under its natural key
(project, commit) so a redelivered request converges on the same row and the same release.

Triggered by `DeployStopRequested` when a project is archived, `stop` removes the project from
its server (every process of its user, its releases, the user), then deletes the project's
secrets from Vault, and answers `DeployStopped`; only then does the coordinator let the
provisioner hand the port to another project. A stop that cannot finish raises, so the port
stays allocated (and the secrets stay) while the old service might still listen.

A deploy whose release needs secrets Vault does not hold stops before the running release is
touched and answers `DeployAwaitingSecrets` with their names: the project waits for them.

Triggered by `DeployRestartRequested` (a person's restart), `restart` stops and starts the release
that serves, unchanged, and answers `DeployRestarted` once it is healthy again, or `DeployFailed`
with what went wrong. A redeploy and a rollback are plain `DeployRequested`s of a chosen commit:
the playbook's no-op, health check and rollback guarantees hold for them as for any deploy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contracts.envelope import Event
from contracts.events import (
    DeployAwaitingSecrets,
    DeployFailed,
    DeployMode,
    DeployRequested,
    DeployRestarted,
    DeployRestartRequested,
    DeployRolledBack,
    DeployStopped,
    DeployStopRequested,
    DeploySucceeded,
)
from contracts.spec import BotCheck
from infra.repo_urls import ForgeSettings, check_clone_url
from infra.vault import project_secret_path, server_secret_path

from .deploy_slots import DeploySlots
from .env_file import render_env
from .ports import (
    DeploymentRecord,
    DeploymentRecords,
    PlaybookResult,
    PlaybookRun,
    PlaybookRunner,
    SecretSource,
    ServerInventory,
    ServerTarget,
)

Heartbeat = Callable[[], Awaitable[None]]
#: Runs its block with the step's database transaction closed (`StepContext.without_transaction`).
OutsideTransaction = Callable[[], AbstractAsyncContextManager[None]]

PLAYBOOKS = {DeployMode.PROCESS: "deploy_process.yml", DeployMode.COMPOSE: "deploy_compose.yml"}
REGISTRY_SECRET_PATH = "platform/registry"  # noqa: S105 -- a Vault path, not a password
STOP_PLAYBOOK = "stop_project.yml"
RESTART_PLAYBOOK = "restart_process.yml"


class TargetUnreachable(Exception):
    """SSH could not reach the server (refused, timed out): worth retrying later."""


class StopFailed(Exception):
    """A project could not be removed from its server; an operator has to look (DLQ)."""


@dataclass(frozen=True)
class DeployerConfig:
    """Where releases live on servers and how long a release may take to answer."""

    deploy_root: str = "/srv/orchestrator"
    health_timeout_seconds: int = 60
    heartbeat_seconds: float = 10.0
    #: The docker CLI on compose-mode servers (an absolute path, or podman's docker shim).
    docker_command: str = "docker"
    #: The git host releases may be cloned from (`ORCH_REPO_*`): a forged request naming any
    #: other repository would run an attacker's code with the project's secrets.
    forge: ForgeSettings = field(default_factory=ForgeSettings)


def missing_secret_hint(project_id: object, name: str) -> str:
    """What the person who owns the project has to do about a secret Vault does not hold."""
    return (
        f"Secret {name} is not stored (Vault secret/{project_secret_path(str(project_id), name)}). "
        f'Store it with `printf %s "$VALUE" | orchestrator secrets set {project_id} {name}` '
        f"(or PUT /projects/{project_id}/secrets/{name} on the API, or /secret {name} in the "
        "chat); the deploy resumes by itself when the last missing secret is stored."
    )


def bind_host_for(host: str) -> str:
    """Loopback targets keep the service private to the machine; others listen everywhere."""
    try:
        return "127.0.0.1" if ipaddress.ip_address(host).is_loopback else "0.0.0.0"
    except ValueError:
        return "127.0.0.1" if host == "localhost" else "0.0.0.0"


def redact(text: str, values: Sequence[str]) -> str:
    """Belt and braces: no secret value survives into an event's reason."""
    for value in values:
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


class DeployerService:
    """Deploys one commit of one project to one server; the outcome is a list of events."""

    def __init__(
        self,
        runner: PlaybookRunner,
        secrets: SecretSource,
        inventory: ServerInventory,
        records: DeploymentRecords,
        *,
        config: DeployerConfig | None = None,
        actor: str = "deployer",
        slots: DeploySlots | None = None,
        outside_transaction: OutsideTransaction | None = None,
    ) -> None:
        self._runner = runner
        self._secrets = secrets
        self._inventory = inventory
        self._records = records
        self._config = config or DeployerConfig()
        self._actor = actor
        #: The servers' own deploy limits (None: only the deployer's concurrency).
        self._slots = slots
        #: Ansible runs for seconds to minutes: no database transaction stays open meanwhile.
        self._outside_transaction = outside_transaction or contextlib.nullcontext

    async def deploy(
        self, request: DeployRequested, heartbeat: Heartbeat | None = None
    ) -> list[Event]:
        # Raises ForeignCloneUrl (dead-lettered with the reason) before anything is touched.
        check_clone_url(request.clone_url, self._config.forge)
        target = await self._inventory.get(request.server_name)
        if target is None:
            return await self._refused(
                request,
                f"server {request.server_name!r} is not in the inventory (or is disabled); "
                "nothing was deployed",
            )
        server_secret = await self._secrets.read(server_secret_path(target.name))
        private_key = (server_secret or {}).get("private_key", "")
        if not private_key:
            return await self._refused(
                request,
                f"no SSH key for server {target.name!r}: store it in Vault at "
                f"secret/servers/{target.name} under `private_key`; nothing was deployed",
            )

        checked_at = datetime.now(UTC)
        values, missing = await self._project_secrets(request)
        run_secrets = {
            "env_file": render_env(
                request.spec,
                port=request.port,
                bind_host=bind_host_for(request.host),
                version=request.commit,
                secrets=values,
                data_dir=self._data_dir(request),
            )
        }
        extravars: dict[str, Any] = {
            "slug": request.spec.slug,
            "commit": request.commit,
            "clone_url": request.clone_url,
            "port": request.port,
            "bind_host": bind_host_for(request.host),
            "health_host": request.host,
            "deploy_root": self._config.deploy_root,
            "health_timeout": self._config.health_timeout_seconds,
            # Run on the server after the health check; a failure rolls the release back.
            # Bot checks need Telegram, so they run only in the project's own tests.
            "acceptance_checks": [
                check.model_dump(mode="json")
                for check in request.spec.checks
                if not isinstance(check, BotCheck)
            ],
            "missing_secrets": missing,
            "missing_secret_hints": {
                name: missing_secret_hint(request.project_id, name) for name in missing
            },
        }
        if request.mode is DeployMode.COMPOSE:
            registry = await self._secrets.read(REGISTRY_SECRET_PATH) or {}
            extravars["registry"] = registry.get("registry", "")
            extravars["registry_username"] = registry.get("username", "")
            extravars["docker_bin"] = self._config.docker_command
            run_secrets["registry_token"] = registry.get("token", "")

        run = PlaybookRun(
            playbook=PLAYBOOKS[request.mode],
            target=target,
            extravars=extravars,
            private_key=private_key,
            secrets=run_secrets,
        )
        # Raises ServerBusy (retried on the transient schedule) when the server's slots are taken.
        slot = self._slots.hold(target.name) if self._slots else contextlib.nullcontext()
        async with self._outside_transaction(), slot:
            result = await self._run_with_heartbeat(run, heartbeat)
        known_values = [private_key, *values.values(), run_secrets.get("registry_token", "")]
        if str((result.stats.get("deploy") or {}).get("outcome")) == "awaiting_secrets":
            return await self._awaiting_secrets(request, result, missing, checked_at)
        return await self._outcome(request, target, result, known_values)

    async def stop(
        self, request: DeployStopRequested, heartbeat: Heartbeat | None = None
    ) -> list[Event]:
        """Remove an archived project from its server; `DeployStopped` once nothing of it runs."""
        target = await self._inventory.get(request.server_name)
        if target is None:
            return [
                self._stopped(
                    request,
                    f"server {request.server_name!r} is not in the inventory (or is disabled); "
                    "nothing could be stopped there" + await self._delete_secrets(request),
                )
            ]
        server_secret = await self._secrets.read(server_secret_path(target.name))
        private_key = (server_secret or {}).get("private_key", "")
        if not private_key:
            raise StopFailed(
                f"no SSH key for server {target.name!r}, so {request.slug} was not stopped and "
                f"port {request.port} stays allocated: store the key in Vault at "
                f"secret/servers/{target.name} under `private_key`, then replay this message"
            )
        run = PlaybookRun(
            playbook=STOP_PLAYBOOK,
            target=target,
            extravars={
                "slug": request.slug,
                "port": request.port,
                "bind_host": bind_host_for(request.host),
                "deploy_root": self._config.deploy_root,
            },
            private_key=private_key,
            secrets={},
        )
        async with self._outside_transaction():
            result = await self._run_with_heartbeat(run, heartbeat)
        if result.unreachable:
            raise TargetUnreachable(
                f"cannot reach server {target.name!r} ({target.host}:{target.ssh_port}) over "
                f"SSH to stop {request.slug}: {redact(result.unreachable, [private_key])}"
            )
        if result.status != "successful":
            failure = redact(result.failure or f"the playbook ended {result.status}", [private_key])
            raise StopFailed(
                f"stopping {request.slug} on {target.name!r} failed ({failure}); port "
                f"{request.port} stays allocated until a replay of this message succeeds"
            )
        removed = f"{request.slug} stopped and removed from {target.name}"
        return [self._stopped(request, removed + await self._delete_secrets(request))]

    async def _delete_secrets(self, request: DeployStopRequested) -> str:
        """An archived project's secrets go once nothing of it runs; the detail names them."""
        names = await self._secrets.delete_project_secrets(request.project_id)
        return f"; secrets deleted from Vault: {', '.join(names)}" if names else ""

    def _stopped(self, request: DeployStopRequested, detail: str) -> DeployStopped:
        return request.derive(
            DeployStopped,
            actor=self._actor,
            project_id=request.project_id,
            server_name=request.server_name,
            port=request.port,
            detail=detail,
        )

    def _data_dir(self, request: DeployRequested) -> str | None:
        """Process mode keeps data beside the releases (the project user's own directory);
        a compose service keeps its data in volumes its compose file declares."""
        if request.mode is not DeployMode.PROCESS:
            return None
        return f"{self._config.deploy_root}/{request.spec.slug}/data"

    async def _project_secrets(self, request: DeployRequested) -> tuple[dict[str, str], list[str]]:
        values: dict[str, str] = {}
        missing: list[str] = []
        for name in request.spec.secret_names:
            stored = await self._secrets.read(project_secret_path(str(request.project_id), name))
            if stored is None or not stored.get("value"):
                missing.append(name)
            else:
                values[name] = stored["value"]
        return values, missing

    async def _run_with_heartbeat(
        self, run: PlaybookRun, heartbeat: Heartbeat | None
    ) -> PlaybookResult:
        task = asyncio.ensure_future(self._runner.run(run))
        while True:
            done, _ = await asyncio.wait({task}, timeout=self._config.heartbeat_seconds)
            if done:
                return task.result()
            if heartbeat is not None:
                await heartbeat()

    async def _outcome(
        self,
        request: DeployRequested,
        target: ServerTarget,
        result: PlaybookResult,
        secret_values: Sequence[str],
    ) -> list[Event]:
        url = f"http://{request.host}:{request.port}"
        deploy: Mapping[str, Any] = result.stats.get("deploy") or {}
        outcome = str(deploy.get("outcome", ""))
        release = str(deploy.get("release") or request.commit[:12])
        if result.unreachable:
            if "host key verification failed" in result.unreachable.lower():
                return await self._refused(
                    request,
                    f"the SSH host key of server {target.name!r} ({target.host}:{target.ssh_port}) "
                    "does not match the key pinned in the inventory, so the deployer refused to "
                    "connect and nothing was deployed. If the server was reinstalled, update its "
                    "host key in the inventory after checking it out of band.",
                )
            raise TargetUnreachable(
                f"cannot reach server {target.name!r} ({target.host}:{target.ssh_port}) over "
                f"SSH: {redact(result.unreachable, secret_values)}"
            )
        if result.status == "successful" and outcome in ("deployed", "noop"):
            await self._save(request, release, "succeeded", url, None)
            return [
                request.derive(
                    DeploySucceeded,
                    actor=self._actor,
                    project_id=request.project_id,
                    commit=request.commit,
                    release=release,
                    url=url,
                    noop=outcome == "noop",
                )
            ]
        reason = redact(
            str(deploy.get("reason") or result.failure or f"the playbook ended {result.status}"),
            secret_values,
        )
        rolled_back = outcome == "rolled_back"
        await self._save(request, release, "rolled_back" if rolled_back else "failed", None, reason)
        events: list[Event] = [
            request.derive(
                DeployFailed,
                actor=self._actor,
                project_id=request.project_id,
                commit=request.commit,
                reason=reason,
                rolled_back=rolled_back,
            )
        ]
        if rolled_back:
            events.append(
                request.derive(
                    DeployRolledBack,
                    actor=self._actor,
                    project_id=request.project_id,
                    failed_release=release,
                    restored_release=str(deploy.get("previous_release", "")),
                )
            )
        return events

    async def _awaiting_secrets(
        self,
        request: DeployRequested,
        result: PlaybookResult,
        missing: Sequence[str],
        checked_at: datetime,
    ) -> list[Event]:
        """Required secrets are missing: the running release was not touched; the project waits.

        The names come from the playbook (which knows the release's optional secrets) and
        are kept only if this run reported them missing: names, never values, leave here.
        No release was made, so the deployments ledger is left as it was (a live release of
        the same commit keeps its record).
        """
        reported = (result.stats.get("deploy") or {}).get("missing_secrets") or []
        names = tuple(name for name in missing if name in reported) or tuple(missing)
        return [
            request.derive(
                DeployAwaitingSecrets,
                actor=self._actor,
                project_id=request.project_id,
                commit=request.commit,
                missing=names,
                checked_at=checked_at,
            )
        ]

    async def _refused(self, request: DeployRequested, reason: str) -> list[Event]:
        await self._save(request, request.commit[:12], "failed", None, reason)
        return [
            request.derive(
                DeployFailed,
                actor=self._actor,
                project_id=request.project_id,
                commit=request.commit,
                reason=reason,
                rolled_back=False,
            )
        ]

    async def _save(
        self,
        request: DeployRequested,
        release: str,
        status: str,
        url: str | None,
        error: str | None,
    ) -> None:
        await self._records.save(
            DeploymentRecord(
                project_id=request.project_id,
                commit=request.commit,
                release=release,
                server_name=request.server_name,
                status=status,
                url=url,
                error=error,
            )
        )

    async def restart(
        self, request: DeployRestartRequested, heartbeat: Heartbeat | None = None
    ) -> list[Event]:
        """Restart the serving release in place; `DeployRestarted` once it answers again."""
        target = await self._inventory.get(request.server_name)
        server_secret = (
            None if target is None else await self._secrets.read(server_secret_path(target.name))
        )
        private_key = (server_secret or {}).get("private_key", "")
        if target is None or not private_key:
            why = (
                f"server {request.server_name!r} is not in the inventory (or is disabled)"
                if target is None
                else f"no SSH key for server {target.name!r}: store it in Vault at "
                f"secret/servers/{target.name} under `private_key`"
            )
            return [self._restart_failed(request, f"{why}; nothing was restarted")]
        run = PlaybookRun(
            playbook=RESTART_PLAYBOOK,
            target=target,
            extravars={
                "slug": request.slug,
                "commit": request.commit,
                "port": request.port,
                "bind_host": bind_host_for(request.host),
                "health_host": request.host,
                "deploy_root": self._config.deploy_root,
                "health_timeout": self._config.health_timeout_seconds,
            },
            private_key=private_key,
            secrets={},
        )
        async with self._outside_transaction():
            result = await self._run_with_heartbeat(run, heartbeat)
        if result.unreachable:
            raise TargetUnreachable(
                f"cannot reach server {target.name!r} ({target.host}:{target.ssh_port}) over "
                f"SSH to restart {request.slug}: {redact(result.unreachable, [private_key])}"
            )
        deploy: Mapping[str, Any] = result.stats.get("deploy") or {}
        release = str(deploy.get("release") or request.commit[:12])
        if result.status == "successful" and deploy.get("outcome") == "restarted":
            return [
                request.derive(
                    DeployRestarted,
                    actor=self._actor,
                    project_id=request.project_id,
                    commit=request.commit,
                    release=release,
                    url=f"http://{request.host}:{request.port}",
                )
            ]
        reason = str(
            deploy.get("reason") or result.failure or f"the playbook ended {result.status}"
        )
        return [self._restart_failed(request, redact(reason, [private_key]))]

    def _restart_failed(self, request: DeployRestartRequested, reason: str) -> DeployFailed:
        return request.derive(
            DeployFailed,
            actor=self._actor,
            project_id=request.project_id,
            commit=request.commit,
            reason=f"the restart failed: {reason}",
            rolled_back=False,
        )
