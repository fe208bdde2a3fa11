"""Composition root of the deployer process: adapters from settings, overridable by tests."""

from __future__ import annotations

import asyncio
import contextlib

from contracts.topology import DEPLOYER
from infra.bus.runtime import ConsumerApp
from infra.bus.topology import with_concurrency
from infra.playbook_runner import AnsibleRunner
from infra.settings import Settings, get_settings
from infra.vault import VaultClient

from .deploy_slots import AdvisoryDeploySlots
from .handlers import DeployerPorts, register
from .ports import PlaybookRunner, SecretSource
from .service import DeployerConfig
from .settings import DeployerSettings
from .sql_inventory import SqlServerInventory
from .sql_records import SqlDeploymentRecords
from .vault_secrets import VaultSecretSource


def build_app(
    settings: Settings | None = None,
    *,
    deployer_settings: DeployerSettings | None = None,
    runner: PlaybookRunner | None = None,
    secrets: SecretSource | None = None,
    config: DeployerConfig | None = None,
) -> ConsumerApp:
    """The deployer process; tests pass their own runner, secret source or config."""
    settings = settings or get_settings()
    deployer_settings = deployer_settings or DeployerSettings()
    app = ConsumerApp(
        "deployer",
        settings=settings,
        specs=(with_concurrency(DEPLOYER, deployer_settings.concurrency),),
    )
    if secrets is None:
        vault = VaultClient.from_settings(settings.vault)
        renewal: list[asyncio.Task[None]] = []

        async def login() -> None:
            await vault.login()
            renewal.append(asyncio.create_task(vault.keep_renewed(), name="vault-renewal"))

        async def stop_renewal() -> None:
            for task in renewal:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        app.on_startup.append(login)
        app.on_shutdown.append(stop_renewal)
        # It reads secrets at every deploy with this token: not ready without it.
        app.health.add("vault", vault.check_token)
        secrets = VaultSecretSource(vault)
    register(
        app,
        DeployerPorts(
            runner=runner or AnsibleRunner(timeout_seconds=deployer_settings.run_timeout_seconds),
            secrets=secrets,
            inventory=SqlServerInventory,
            records=SqlDeploymentRecords,
            config=config or deployer_settings.service_config(settings.consumer.heartbeat_seconds),
            slots=AdvisoryDeploySlots(lambda: app.engine),
        ),
    )
    return app


def main() -> None:
    build_app().run()
