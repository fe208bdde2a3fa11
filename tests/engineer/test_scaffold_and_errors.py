"""The real repo templates pass offline verification; infrastructure errors stay retryable."""

from __future__ import annotations

import time

import pytest

from consumers.engineer.service import EngineerService
from consumers.engineer.template_engineer import TemplateEngineer
from consumers.engineer.test_runner import PytestRunner
from consumers.engineer.workspace import GitUnavailable, GitWorkspaces
from consumers.repo.scaffold import JinjaScaffolder
from contracts.events import CodeGenerated
from contracts.spec import ConfigVar, ProjectSpec, ServiceKind
from infra.stack.ports import free_port
from tests.engineer.conftest import RepoFactory, code_requested, no_heartbeat


@pytest.mark.parametrize("kind", [ServiceKind.HTTP, ServiceKind.TELEGRAM_BOT, ServiceKind.WORKER])
async def test_the_repo_steps_scaffold_passes_offline(
    make_repo: RepoFactory, kind: ServiceKind
) -> None:
    spec = ProjectSpec(
        name="Expense Tracker", slug="expense-tracker", summary="Tracks family expenses.",
        kinds=(kind,),
        config=(ConfigVar(name="TELEGRAM_BOT_TOKEN", secret=True),)
        if kind is ServiceKind.TELEGRAM_BOT else (),
    )
    url, base = make_repo(dict(JinjaScaffolder().render(spec).files))
    service = EngineerService(TemplateEngineer(PytestRunner()), GitWorkspaces(), max_iterations=1)

    started = time.monotonic()
    result = await service.handle(code_requested(url, base), no_heartbeat)
    print(f"offline verify of the {kind.value} template: {time.monotonic() - started:.1f} s")

    assert isinstance(result.event, CodeGenerated), result.event
    assert result.event.commit == base
    assert result.event.tests_passed > 0


async def test_an_unreachable_git_host_is_a_retryable_error() -> None:
    url = f"git://127.0.0.1:{free_port()}/gone.git"
    service = EngineerService(TemplateEngineer(PytestRunner()), GitWorkspaces(), max_iterations=1)

    with pytest.raises(GitUnavailable, match="git clone failed"):
        await service.handle(code_requested(url, "0" * 40), no_heartbeat)
