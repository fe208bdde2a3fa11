"""Every release is checked against its spec's acceptance checks, not only its health endpoint.

Process-mode deploys over real SSH to the local sshd, secrets from a real OpenBao, as in
test_process_deploy. The tests run in file order on one project: a first release passes its
checks; the next one answers /health but not a check, and is rolled back with the failing check
and what the service answered in the reason the user reads.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from contracts.events import DeployFailed, DeployRequested, DeployRolledBack, DeploySucceeded
from contracts.spec import (
    AcceptanceCheck,
    BotCheck,
    ConfigVar,
    HttpCheck,
    HttpStep,
    ProjectSpec,
    ServiceKind,
    WorkerCheck,
)

from .conftest import SERVER_NAME, Deployer, SecretAudit, ServiceRepo, VaultSetup, service_port

SLUG = "checked-service"
PORT = service_port()

#: What the fixture's service does: /health with the deployed version, /config naming the
#: variables that are set (never their values).
PASSING: tuple[AcceptanceCheck, ...] = (
    HttpCheck(
        name="health names the deployed version, /config sees the stored secret",
        steps=(
            HttpStep(path="/health", expect_json={"status": "ok"}, capture={"version": "version"}),
            HttpStep(path="/config", expect_json={"set": ["API_TOKEN"]}),
        ),
    ),
    WorkerCheck(name="the configuration is visible", path="/config", expect_json={"set": []}),
    # Telegram is out of a deploy's reach: a bot check is left to the project's own tests.
    BotCheck(name="never sent by the deployer", message="/start", reply_pattern="^never$"),
)
FAILING = HttpCheck(
    name="GET /totals reports the totals",
    steps=(HttpStep(path="/totals", expect_json={"total": 0}),),
)


def spec(checks: tuple[AcceptanceCheck, ...]) -> ProjectSpec:
    return ProjectSpec(
        name="Checked service",
        slug=SLUG,
        summary="Answers what its spec promises.",
        kinds=(ServiceKind.HTTP,),
        config=(ConfigVar(name="API_TOKEN", secret=True),),
        checks=checks,
    )


def request(
    vault_setup: VaultSetup, repo: ServiceRepo, commit: str, checks: tuple[AcceptanceCheck, ...]
) -> DeployRequested:
    return DeployRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=vault_setup.project_id,
        spec=spec(checks),
        clone_url=repo.clone_url,
        commit=commit,
        server_name=SERVER_NAME,
        host="127.0.0.1",
        port=PORT,
    )


def health() -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=3) as response:
        return json.loads(response.read())


async def test_a_release_that_passes_its_checks_goes_live(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    events, _ = await deployer.deploy(
        request(vault_setup, service_repo, service_repo.good, PASSING)
    )

    assert [type(e) for e in events] == [DeploySucceeded], events
    assert health() == {"status": "ok", "version": service_repo.good}
    assert (deploy_root / SLUG / "current").resolve().name == service_repo.good[:12]


async def test_a_healthy_release_that_fails_a_check_is_rolled_back_with_the_check(
    deployer: Deployer,
    service_repo: ServiceRepo,
    vault_setup: VaultSetup,
    deploy_root: Path,
    secret_audit: SecretAudit,
) -> None:
    events, _ = await deployer.deploy(
        request(vault_setup, service_repo, service_repo.good_v2, (*PASSING, FAILING))
    )

    assert [type(e) for e in events] == [DeployFailed, DeployRolledBack], events
    failed, rolled_back = events
    assert isinstance(failed, DeployFailed)
    assert isinstance(rolled_back, DeployRolledBack)
    assert failed.rolled_back is True
    # The user reads which check failed, the request, and what the release answered.
    assert "acceptance check 'GET /totals reports the totals' failed" in failed.reason
    assert "step 1 (GET /totals) answered 404, expected 200: {}" in failed.reason
    assert vault_setup.api_token not in failed.reason
    assert (rolled_back.failed_release, rolled_back.restored_release) == (
        service_repo.good_v2[:12],
        service_repo.good[:12],
    )
    # The release that passed its checks serves again.
    assert health() == {"status": "ok", "version": service_repo.good}
    assert (deploy_root / SLUG / "current").resolve().name == service_repo.good[:12]
    record = await deployer.record(service_repo.good_v2)
    assert (record.status, record.error) == ("rolled_back", failed.reason)
    assert secret_audit.leaks == []
