"""The in-process coding loop with the real ChatOpenAI client against a scripted server."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumers.engineer.coder.tools import make_workspace_tools, resolve_inside
from consumers.engineer.langgraph_coder import LangGraphCoder
from consumers.engineer.service import EngineerService
from consumers.engineer.test_runner import PytestRunner, TestReport
from consumers.engineer.workspace import GitWorkspaces
from contracts.events import CodeFailed, CodeGenerated
from infra.llm import build_chat_model
from infra.settings import LLMSettings
from tests.engineer.conftest import BROKEN_FILES, RepoFactory, code_requested, git, no_heartbeat
from tests.fakes.openai_server import Reply, ScriptedOpenAI

WRONG_CALC = (
    "def add(a: int, b: int) -> int:\n    return a + b\n\n\n"
    "def subtract(a: int, b: int) -> int:\n    return a + b\n"
)
RIGHT_CALC = WRONG_CALC.replace("return a + b\n", "return a - b\n").replace(
    "return a - b\n", "return a + b\n", 1
)


def coder_service(server: ScriptedOpenAI, max_iterations: int) -> EngineerService:
    settings = LLMSettings(
        provider="openai", base_url=server.base_url, model="scripted",
        prompt_cost_per_1k=0.5, completion_cost_per_1k=1.5,
    )
    llm = build_chat_model(settings, "sk-test-never-in-prompts")
    assert llm is not None
    return EngineerService(
        LangGraphCoder(llm, PytestRunner(), settings), GitWorkspaces(),
        max_iterations=max_iterations,
    )


def tool_contents(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def test_wrong_fix_then_right_fix_is_pushed_after_two_iterations(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(BROKEN_FILES)
    request = code_requested(url, base)
    with ScriptedOpenAI() as server:
        server.replies(
            Reply.tool_call("write_file", {"path": "../../escape.py", "content": "x = 1\n"},
                            prompt_tokens=900, completion_tokens=40),
            Reply.tool_call("write_file", {"path": "app/calc.py", "content": WRONG_CALC},
                            prompt_tokens=1000, completion_tokens=60),
            Reply.text("Added subtract", prompt_tokens=1100, completion_tokens=5),
            Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC},
                            prompt_tokens=1500, completion_tokens=60),
            Reply.text("Implemented subtract(a, b)", prompt_tokens=1600, completion_tokens=6),
        )
        service = coder_service(server, max_iterations=4)
        result = await service.handle(request, no_heartbeat)

        event = result.event
        assert isinstance(event, CodeGenerated), event
        assert (event.mode, event.iterations, event.tests_passed, event.tests_failed) == (
            "llm", 2, 4, 0,
        )
        assert event.summary == "Implemented subtract(a, b)"
        assert event.commit != base

        # The model saw the failing test first, its escape was refused, then the retry reason.
        assert "test_subtract" in server.requests[0]["messages"][-1]["content"]
        assert "outside the workspace" in tool_contents(server.requests[1])[0]
        retry = server.requests[3]["messages"][-1]["content"]
        assert "Iteration 1" in retry
        assert "assert 8 == 2" in retry
        assert "sk-test-never-in-prompts" not in server.raw_bodies()

        prompt, completion = 900 + 1000 + 1100 + 1500 + 1600, 40 + 60 + 5 + 60 + 6
        (usage,) = result.usage
        assert (usage.model, usage.prompt_tokens, usage.completion_tokens) == (
            "scripted", prompt, completion,
        )
        expected_cost = round(prompt * 0.5 / 1000 + completion * 1.5 / 1000, 8)
        assert usage.cost_usd == Decimal(str(expected_cost))

        # The commit is on the remote branch, directly on top of the scaffold.
        clone = tmp_path / "check"
        git("clone", "--quiet", url, str(clone), cwd=tmp_path)
        assert git("rev-parse", "HEAD", cwd=clone) == event.commit
        assert git("rev-parse", "HEAD^", cwd=clone) == base
        assert git("log", "-1", "--format=%s", cwd=clone) == "engineer: Implemented subtract(a, b)"
        assert (clone / "app" / "calc.py").read_text() == RIGHT_CALC
        assert not (tmp_path.parent / "escape.py").exists()

        # Redelivery: the pushed result is found by its natural key; the model is not called.
        calls = len(server.requests)
        again = await coder_service(server, max_iterations=4).handle(request, no_heartbeat)
        assert len(server.requests) == calls
        assert isinstance(again.event, CodeGenerated)
        assert again.event.commit == event.commit
        assert again.event.event_id == event.event_id
        assert (again.event.iterations, again.event.tests_passed) == (2, 4)
        assert again.usage == ()


async def test_the_bound_is_reached_and_the_failure_names_the_failing_test(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(BROKEN_FILES)

    def always_wrong(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return Reply.text("Tried again")
        return Reply.tool_call("write_file", {"path": "app/calc.py", "content": WRONG_CALC})

    with ScriptedOpenAI(always_wrong) as server:
        result = await coder_service(server, max_iterations=2).handle(
            code_requested(url, base), no_heartbeat
        )

    event = result.event
    assert isinstance(event, CodeFailed), event
    assert event.iterations == 2
    assert event.reason.startswith("gave up after 2 iterations: 3 passed, 1 failed")
    assert "test_subtract" in event.reason
    assert result.usage
    assert result.usage[0].prompt_tokens > 0
    clone = tmp_path / "check"
    git("clone", "--quiet", url, str(clone), cwd=tmp_path)
    assert git("rev-parse", "HEAD", cwd=clone) == base


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", ".git/config", "app/../../x"])
def test_paths_outside_the_workspace_are_refused(tmp_path: Path, path: str) -> None:
    from langchain_core.tools import ToolException

    with pytest.raises(ToolException):
        resolve_inside(tmp_path, path)


async def test_a_symlink_out_of_the_workspace_is_refused(tmp_path: Path) -> None:
    workspace = tmp_path / "repo"
    workspace.mkdir()
    (workspace / "link").symlink_to(tmp_path)

    async def no_tests() -> TestReport:
        return TestReport(passed=0, failed=0)

    write = {tool.name: tool for tool in make_workspace_tools(workspace, no_tests)}["write_file"]
    answer = await write.ainvoke({"path": "link/owned.py", "content": "x"})
    assert "outside the workspace" in answer
    assert not (tmp_path / "owned.py").exists()
