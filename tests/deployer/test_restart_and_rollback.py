"""A person's restart and rollback, as the deployer runs them over real SSH.

A restart stops and starts the serving release in place (a new supervisor, the same release);
a rollback is a deploy of the previous commit, whose checkout is still on the server. The tests
run in file order on one project, like its life: deploy, restart, upgrade, roll back.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from contracts.events import (
    DeployFailed,
    DeployRequested,
    DeployRestarted,
    DeployRestartRequested,
    DeploySucceeded,
)
from contracts.spec import ProjectSpec, ServiceKind

from .conftest import SERVER_NAME, Deployer, ServiceRepo, VaultSetup, service_port

SLUG = "restart-me"
PORT = service_port()


def _spec(slug: str = SLUG) -> ProjectSpec:
    return ProjectSpec(
        name="Restart me", slug=slug, summary="Restarted.", kinds=(ServiceKind.HTTP,)
    )


def _deploy(vault_setup: VaultSetup, repo: ServiceRepo, commit: str) -> DeployRequested:
    return DeployRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=vault_setup.project_id,
        spec=_spec(),
        clone_url=repo.clone_url,
        commit=commit,
        server_name=SERVER_NAME,
        host="127.0.0.1",
        port=PORT,
    )


def _restart(
    vault_setup: VaultSetup, commit: str, slug: str = SLUG, port: int = PORT
) -> DeployRestartRequested:
    return DeployRestartRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=vault_setup.project_id,
        slug=slug,
        commit=commit,
        server_name=SERVER_NAME,
        host="127.0.0.1",
        port=port,
    )


def _health() -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=3) as response:
        return json.loads(response.read())


async def test_restart_starts_the_serving_release_again(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    events, _ = await deployer.deploy(_deploy(vault_setup, service_repo, service_repo.good))
    assert [type(e) for e in events] == [DeploySucceeded], events
    pid_file = deploy_root / SLUG / "run" / "supervisor.pid"
    pid_before = pid_file.read_text()

    events = await deployer.restart(_restart(vault_setup, service_repo.good))

    assert [type(e) for e in events] == [DeployRestarted], events
    restarted = events[0]
    assert isinstance(restarted, DeployRestarted)
    assert restarted.release == service_repo.good[:12]
    assert restarted.url == f"http://127.0.0.1:{PORT}"
    # A new supervisor runs the same release, and it answers as that commit.
    assert pid_file.read_text() != pid_before
    assert (deploy_root / SLUG / "current").resolve().name == service_repo.good[:12]
    assert _health() == {"status": "ok", "version": service_repo.good}


async def test_rollback_serves_the_previous_release_again(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    events, _ = await deployer.deploy(_deploy(vault_setup, service_repo, service_repo.good_v2))
    assert [type(e) for e in events] == [DeploySucceeded], events
    assert _health()["version"] == service_repo.good_v2

    events, _ = await deployer.deploy(_deploy(vault_setup, service_repo, service_repo.good))

    assert [type(e) for e in events] == [DeploySucceeded], events
    rolled_back = events[0]
    assert isinstance(rolled_back, DeploySucceeded)
    assert rolled_back.noop is False
    assert rolled_back.release == service_repo.good[:12]
    assert (deploy_root / SLUG / "current").resolve().name == service_repo.good[:12]
    assert _health() == {"status": "ok", "version": service_repo.good}


async def test_restart_without_a_release_fails_with_what_to_do(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup
) -> None:
    events = await deployer.restart(
        _restart(vault_setup, service_repo.good, slug="never-deployed", port=service_port())
    )

    assert [type(e) for e in events] == [DeployFailed], events
    failed = events[0]
    assert isinstance(failed, DeployFailed)
    assert failed.rolled_back is False
    assert "nothing to restart" in failed.reason
    assert "redeploy" in failed.reason
