"""The real repo templates pass offline verification; infrastructure errors stay retryable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from consumers.engineer.agent_io import ContainerTask, read_result, write_task
from consumers.engineer.container_entry import run as container_run
from consumers.engineer.service import EngineerService
from consumers.engineer.template_engineer import TemplateEngineer
from consumers.engineer.test_runner import PytestRunner
from consumers.engineer.workspace import GitUnavailable, GitWorkspaces
from consumers.repo.scaffold import JinjaScaffolder
from contracts.events import CodeGenerated
from contracts.spec import ConfigVar, ProjectSpec, ServiceKind
from infra.settings import LLMSettings
from infra.stack.ports import free_port
from tests.engineer.conftest import BROKEN_FILES, RepoFactory, code_requested, git, no_heartbeat
from tests.engineer.test_langgraph_coder import RIGHT_CALC
from tests.fakes.openai_server import Reply, ScriptedOpenAI


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


async def test_the_container_entry_runs_the_loop_and_writes_its_result(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(BROKEN_FILES)
    workspace, io_dir = tmp_path / "workspace", tmp_path / "io"
    git("clone", "--quiet", url, str(workspace), cwd=tmp_path)
    io_dir.mkdir()
    request = code_requested(url, base)
    write_task(io_dir, ContainerTask(str(request.project_id), request.spec, 3))
    with ScriptedOpenAI() as provider:
        provider.replies(
            Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC},
                            prompt_tokens=700, completion_tokens=70),
            Reply.text("Implemented subtract", prompt_tokens=800, completion_tokens=8),
        )
        settings = LLMSettings(provider="openai", base_url=provider.base_url, model="m")
        assert await container_run(workspace, io_dir, settings, "sk-in-container") == 0

    result = read_result(io_dir)
    assert result is not None
    assert (result.iterations, result.summary, result.reason) == (1, "Implemented subtract", "")
    assert [(u.model, u.prompt_tokens, u.completion_tokens) for u in result.usage] == [
        ("m", 1500, 78)
    ]
    assert (workspace / "app" / "calc.py").read_text() == RIGHT_CALC
