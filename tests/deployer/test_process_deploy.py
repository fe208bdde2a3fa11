"""Process-mode deploys over real SSH to the local sshd, secrets from a real OpenBao.

The tests run in file order on one server directory, like the life of one project: first
deploy, the same commit again, an upgrade, a broken release that is rolled back. A host key
mismatch and a missing secret use projects of their own.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import (
    DeployAwaitingSecrets,
    DeployFailed,
    DeployRequested,
    DeployRolledBack,
    DeploySucceeded,
)
from contracts.spec import ConfigVar, Integration, ProjectSpec, ServiceKind
from infra.db.models import Server, ServerState
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.vault import VaultClient

from .conftest import (
    SERVER_NAME,
    Deployer,
    SecretAudit,
    ServiceRepo,
    VaultSetup,
    env_file_mode,
    read_env_file,
    service_port,
)

SLUG = "expense-tracker"
PORT = service_port()
GREETING = "hello 'world' $HOME \"quoted\""


def spec(slug: str = SLUG, extra_secret: str | None = None) -> ProjectSpec:
    config = [
        ConfigVar(name="GREETING", default=GREETING),
        ConfigVar(name="API_TOKEN", secret=True),
        ConfigVar(name="TELEGRAM_BOT_TOKEN", secret=True),
    ]
    if extra_secret:
        config.append(ConfigVar(name=extra_secret, secret=True))
    return ProjectSpec(
        name="Expense tracker",
        slug=slug,
        summary="Tracks expenses.",
        kinds=(ServiceKind.HTTP,),
        config=tuple(config),
    )


def request(
    vault_setup: VaultSetup,
    repo: ServiceRepo,
    commit: str,
    *,
    project_spec: ProjectSpec | None = None,
    server_name: str = SERVER_NAME,
    port: int = PORT,
) -> DeployRequested:
    return DeployRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=vault_setup.project_id,
        spec=project_spec or spec(),
        clone_url=repo.clone_url,
        commit=commit,
        server_name=server_name,
        host="127.0.0.1",
        port=port,
    )


def get_json(path: str, port: int = PORT) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_no_leaks(audit: SecretAudit) -> None:
    assert audit.runs > 0
    assert audit.events_seen > 0
    assert audit.argv_samples > 0
    assert audit.leaks == []


async def test_first_deploy_serves_with_a_complete_env(
    deployer: Deployer,
    service_repo: ServiceRepo,
    vault_setup: VaultSetup,
    deploy_root: Path,
    secret_audit: SecretAudit,
) -> None:
    events, seconds = await deployer.deploy(request(vault_setup, service_repo, service_repo.good))
    print(f"first deploy took {seconds:.1f}s")

    assert [type(e) for e in events] == [DeploySucceeded], events
    succeeded = events[0]
    assert isinstance(succeeded, DeploySucceeded)
    assert succeeded.noop is False
    assert succeeded.url == f"http://127.0.0.1:{PORT}"
    assert succeeded.release == service_repo.good[:12]
    assert get_json("/health") == (200, {"status": "ok", "version": service_repo.good})
    # The service got its secret (and runs without the optional bot token).
    assert get_json("/config") == (200, {"set": ["API_TOKEN", "GREETING"]})

    release = deploy_root / SLUG / "releases" / service_repo.good[:12]
    assert (deploy_root / SLUG / "current").resolve() == release
    env_path = release / ".env"
    assert env_file_mode(env_path) == 0o600
    assert read_env_file(env_path) == {
        "GREETING": GREETING,
        "API_TOKEN": vault_setup.api_token,
        "TELEGRAM_BOT_TOKEN": "",
        "PORT": str(PORT),
        "HOST": "127.0.0.1",
        "APP_VERSION": service_repo.good,
        # Outside the release directory, so a service's files outlive the next deploy.
        "DATA_DIR": f"{deploy_root}/{SLUG}/data",
    }
    record = await deployer.record(service_repo.good)
    assert (record.status, record.url) == ("succeeded", succeeded.url)
    assert deployer.heartbeats > 0
    assert_no_leaks(secret_audit)


async def test_same_commit_again_is_a_noop(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    pid_before = (deploy_root / SLUG / "run" / "supervisor.pid").read_text()
    events, seconds = await deployer.deploy(request(vault_setup, service_repo, service_repo.good))
    print(f"no-op deploy took {seconds:.1f}s")

    assert [type(e) for e in events] == [DeploySucceeded]
    assert isinstance(events[0], DeploySucceeded)
    assert events[0].noop is True
    assert (deploy_root / SLUG / "run" / "supervisor.pid").read_text() == pid_before
    assert get_json("/health")[0] == 200


async def test_upgrade_switches_to_the_new_release(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    first_venv = (deploy_root / SLUG / "releases" / service_repo.good[:12] / ".venv").resolve()
    built_at = (first_venv / ".complete").stat().st_mtime_ns
    events, seconds = await deployer.deploy(
        request(vault_setup, service_repo, service_repo.good_v2)
    )
    print(f"upgrade deploy took {seconds:.1f}s")

    assert [type(e) for e in events] == [DeploySucceeded], events
    assert get_json("/health") == (200, {"status": "ok", "version": service_repo.good_v2})
    current = (deploy_root / SLUG / "current").resolve()
    assert current.name == service_repo.good_v2[:12]
    # Same requirements: the new release runs from the venv the first one got, not rebuilt.
    assert (current / ".venv").is_symlink()
    assert (current / ".venv").resolve() == first_venv
    assert (first_venv / ".complete").stat().st_mtime_ns == built_at


async def test_broken_release_is_rolled_back(
    deployer: Deployer,
    service_repo: ServiceRepo,
    vault_setup: VaultSetup,
    deploy_root: Path,
    secret_audit: SecretAudit,
) -> None:
    events, seconds = await deployer.deploy(request(vault_setup, service_repo, service_repo.broken))
    print(f"failed deploy with rollback took {seconds:.1f}s")

    assert [type(e) for e in events] == [DeployFailed, DeployRolledBack], events
    failed, rolled_back = events
    assert isinstance(failed, DeployFailed)
    assert isinstance(rolled_back, DeployRolledBack)
    assert failed.rolled_back is True
    assert "health check" in failed.reason.lower()
    # What the poll saw, not the SSH client's "Shared connection ... closed." noise.
    assert "did not answer 200 within 6s (last: HTTP 500)" in failed.reason
    assert "Shared connection" not in failed.reason
    assert rolled_back.failed_release == service_repo.broken[:12]
    assert rolled_back.restored_release == service_repo.good_v2[:12]
    # The previous release serves again, behind `current`.
    assert get_json("/health") == (200, {"status": "ok", "version": service_repo.good_v2})
    assert (deploy_root / SLUG / "current").resolve().name == service_repo.good_v2[:12]
    record = await deployer.record(service_repo.broken)
    assert record.status == "rolled_back"
    assert record.error == failed.reason
    assert_no_leaks(secret_audit)


async def test_a_missing_secret_makes_the_deploy_wait_for_it(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    slug = "needs-a-key"
    events, _ = await deployer.deploy(
        request(
            vault_setup,
            service_repo,
            service_repo.good,
            project_spec=spec(slug, extra_secret="STRIPE_API_KEY"),
            port=service_port(),
        )
    )

    assert [type(e) for e in events] == [DeployAwaitingSecrets]
    waiting = events[0]
    assert isinstance(waiting, DeployAwaitingSecrets)
    # Only required names: the release's deploy.json declares TELEGRAM_BOT_TOKEN optional.
    assert waiting.missing == ("STRIPE_API_KEY",)
    assert waiting.commit == service_repo.good
    assert not (deploy_root / slug / "current").exists()
    assert not (deploy_root / slug / "run" / "supervisor.pid").exists()


async def test_an_integrations_variable_is_a_secret_the_deploy_waits_for(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    slug = "needs-the-weather"
    weather = Integration(
        name="OpenWeather",
        base_url="https://api.openweathermap.org/data/2.5",
        env_vars=("OPENWEATHER_API_KEY",),
    )
    # Not listed in `config`: the integration alone makes it a secret the deploy reads.
    project_spec = spec(slug).model_copy(update={"integrations": (weather,)})
    events, _ = await deployer.deploy(
        request(
            vault_setup,
            service_repo,
            service_repo.good,
            project_spec=project_spec,
            port=service_port(),
        )
    )

    assert [type(e) for e in events] == [DeployAwaitingSecrets]
    waiting = events[0]
    assert isinstance(waiting, DeployAwaitingSecrets)
    assert waiting.missing == ("OPENWEATHER_API_KEY",)
    assert not (deploy_root / slug / "current").exists()


async def test_host_key_mismatch_refuses_to_connect(
    deployer: Deployer,
    service_repo: ServiceRepo,
    vault_setup: VaultSetup,
    deploy_root: Path,
    deploy_sessions: async_sessionmaker[AsyncSession],
    openbao: BootstrappedOpenBao,
    tmp_path: Path,
) -> None:
    impostor_key = tmp_path / "impostor"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor_key)], check=True
    )
    async with deploy_sessions.begin() as session:
        real = await session.scalar(select(Server).where(Server.name == SERVER_NAME))
        assert real is not None
        key_type, key_body = impostor_key.with_suffix(".pub").read_text().split()[:2]
        session.add(
            Server(
                name="pinned-wrong",
                host=real.host,
                ssh_port=real.ssh_port,
                ssh_user=real.ssh_user,
                host_key=f"[{real.host}]:{real.ssh_port} {key_type} {key_body}",
                state=ServerState.READY,
            )
        )
    operator = VaultClient(openbao.addr, token=openbao.root_token)
    await operator.write_secret("servers/pinned-wrong", {"private_key": vault_setup.private_key})
    slug = "never-deployed"

    events, _ = await deployer.deploy(
        request(
            vault_setup,
            service_repo,
            service_repo.good,
            project_spec=spec(slug),
            server_name="pinned-wrong",
            port=service_port(),
        )
    )

    assert [type(e) for e in events] == [DeployFailed]
    failed = events[0]
    assert isinstance(failed, DeployFailed)
    assert failed.rolled_back is False
    assert "host key" in failed.reason
    assert "does not match" in failed.reason
    assert "nothing was deployed" in failed.reason
    assert not (deploy_root / slug).exists()
