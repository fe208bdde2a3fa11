"""The in-process coding loop with the real ChatOpenAI client against a scripted server."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool

from consumers.engineer.agent import CodingTask
from consumers.engineer.agent import TestRunner as Runner  # "Test*" would be collected
from consumers.engineer.coder.prompts import task_message
from consumers.engineer.coder.tools import make_workspace_tools, resolve_inside
from consumers.engineer.langgraph_coder import LangGraphCoder
from consumers.engineer.service import EngineerResult, EngineerService
from consumers.engineer.test_runner import PytestRunner, TestReport
from consumers.engineer.workspace import GitWorkspaces
from contracts.events import CodeFailed, CodeGenerated
from contracts.spec import Integration, Persistence, PersistenceKind, Schedule
from infra.llm import build_chat_model
from infra.settings import LLMSettings
from tests.engineer.conftest import (
    BROKEN_FILES,
    SERVICE_FILES,
    RepoFactory,
    code_requested,
    git,
    no_heartbeat,
)
from tests.fakes.openai_server import Reply, ScriptedOpenAI

WRONG_CALC = (
    "def add(a: int, b: int) -> int:\n    return a + b\n\n\n"
    "def subtract(a: int, b: int) -> int:\n    return a + b\n"
)
RIGHT_CALC = WRONG_CALC.replace("return a + b\n", "return a - b\n").replace(
    "return a - b\n", "return a + b\n", 1
)


def coder(
    server: ScriptedOpenAI, time_limit_seconds: float = 600.0, runner: Runner | None = None
) -> LangGraphCoder:
    settings = LLMSettings(
        provider="openai", base_url=server.base_url, model="scripted",
        prompt_cost_per_1k=0.5, completion_cost_per_1k=1.5,
    )
    llm = build_chat_model(settings, "sk-test-never-in-prompts")
    assert llm is not None
    runner = runner or PytestRunner()
    return LangGraphCoder(
        llm, runner, settings, time_limit_seconds=time_limit_seconds,
        # The sandboxed runner also starts the app before a commit, as the engineer does.
        app_checker=runner if isinstance(runner, PytestRunner) else None,
    )


def coder_service(
    server: ScriptedOpenAI, max_iterations: int, time_limit_seconds: float = 600.0
) -> EngineerService:
    return EngineerService(
        coder(server, time_limit_seconds), GitWorkspaces(), max_iterations=max_iterations
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


def remote_head(url: str, tmp_path: Path) -> str:
    clone = tmp_path / "check"
    git("clone", "--quiet", url, str(clone), cwd=tmp_path)
    return git("rev-parse", "HEAD", cwd=clone)


async def test_a_model_that_answers_done_at_once_fails_for_changing_nothing(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(SERVICE_FILES)  # green before any change: "done" looked like success

    with ScriptedOpenAI(lambda _body: Reply.text("Everything already works")) as server:
        result = await coder_service(server, max_iterations=2).handle(
            code_requested(url, base), no_heartbeat
        )

    event = result.event
    assert isinstance(event, CodeFailed), event
    assert event.iterations == 2
    assert "the model changed nothing" in event.reason
    # The model was told why, and that tests are not a thing to bend.
    retry = server.requests[1]["messages"][-1]["content"]
    assert "the model changed nothing" in retry
    assert "must not be weakened" in retry
    assert "wrong test" not in server.prompt_text()
    assert remote_head(url, tmp_path) == base


async def test_protected_files_are_refused_and_a_run_that_changes_one_fails(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(BROKEN_FILES)
    # Model-written tests run with the workspace writable: the tool's refusal is not enough.
    sneaky_test = (
        "from pathlib import Path\n\n\n"
        "def test_tweak_deployment() -> None:\n"
        "    (Path(__file__).parent.parent / 'deploy.json').write_text('{\"kind\": \"worker\"}')\n"
    )
    with ScriptedOpenAI() as server:
        server.replies(
            Reply.tool_call("write_file", {"path": "deploy.json", "content": "{}\n"}),
            Reply.tool_call("edit_file", {"path": "app/main.py", "old": "'ok'", "new": "'up'"}),
            Reply.tool_call("delete_file", {"path": "app/main.py"}),
            Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
            Reply.tool_call("write_file", {"path": "tests/test_sneaky.py", "content": sneaky_test}),
            Reply.text("Implemented subtract"),
        )
        result = await coder_service(server, max_iterations=1).handle(
            code_requested(url, base), no_heartbeat
        )

    refusals = tool_contents(server.requests[3])
    assert len(refusals) == 3
    assert all("is protected" in refusal for refusal in refusals), refusals
    event = result.event
    assert isinstance(event, CodeFailed), event
    assert "protected files were changed: deploy.json" in event.reason
    assert remote_head(url, tmp_path) == base


async def test_deleting_the_failing_test_leaves_fewer_tests_than_before_and_fails(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(BROKEN_FILES)  # 3 pass, test_subtract fails: 4 tests at baseline
    with ScriptedOpenAI() as server:
        server.replies(
            Reply.tool_call("delete_file", {"path": "tests/test_calc.py"}),
            Reply.text("Removed a broken test"),
        )
        result = await coder_service(server, max_iterations=1).handle(
            code_requested(url, base), no_heartbeat
        )

    assert tool_contents(server.requests[1]) == ["deleted tests/test_calc.py"]
    event = result.event
    assert isinstance(event, CodeFailed), event
    assert "only 2 tests pass, fewer than the 4 tests" in event.reason
    assert remote_head(url, tmp_path) == base


async def test_a_model_that_searches_and_edits_a_snippet_passes(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(BROKEN_FILES)
    subtract = "    return a + b\n\n\ndef subtract(a: int, b: int) -> int:\n    return a - b\n"
    with ScriptedOpenAI() as server:
        server.replies(
            Reply.tool_call("search", {"text": "def add"}),
            Reply.tool_call(
                "edit_file", {"path": "app/calc.py", "old": "    return a + b\n", "new": subtract}
            ),
            Reply.text("Implemented subtract(a, b)"),
        )
        result = await coder_service(server, max_iterations=1).handle(
            code_requested(url, base), no_heartbeat
        )

    found = tool_contents(server.requests[1])[0]
    assert "app/calc.py:1: def add(a: int, b: int) -> int:" in found
    assert "tests/test_calc.py:1: from app.calc import add" not in found  # "def add" only
    assert tool_contents(server.requests[2])[-1] == "edited app/calc.py"
    event = result.event
    assert isinstance(event, CodeGenerated), event
    assert (event.iterations, event.tests_passed, event.tests_failed) == (1, 4, 0)
    assert remote_head(url, tmp_path) == event.commit != base
    assert (tmp_path / "check" / "app" / "calc.py").read_text() == RIGHT_CALC


def workspace_tools(workspace: Path) -> dict[str, BaseTool]:
    async def no_tests() -> TestReport:
        return TestReport(passed=0, failed=0)

    return {tool.name: tool for tool in make_workspace_tools(workspace, no_tests)}


async def test_edit_file_needs_a_snippet_that_occurs_exactly_once(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    calc = tmp_path / "app" / "calc.py"
    calc.write_text(WRONG_CALC)
    edit = workspace_tools(tmp_path)["edit_file"]

    twice = await edit.ainvoke({"path": "app/calc.py", "old": "return a + b", "new": "x"})
    missing = await edit.ainvoke({"path": "app/calc.py", "old": "return a * b", "new": "x"})
    assert "occurs 2 times" in twice
    assert "does not occur" in missing
    assert calc.read_text() == WRONG_CALC

    unique = "def subtract(a: int, b: int) -> int:\n    return a + b"
    fixed = unique.replace("a + b", "a - b")
    assert await edit.ainvoke({"path": "app/calc.py", "old": unique, "new": fixed}) == (
        "edited app/calc.py"
    )
    assert calc.read_text() == RIGHT_CALC

    # Wrong kinds of file are the model's mistake to correct, not a crash of the run.
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\xff\xfe")
    binary = await edit.ainvoke({"path": "logo.png", "old": "PNG", "new": "JPG"})
    assert "not a text file" in binary
    write = workspace_tools(tmp_path)["write_file"]
    assert "is a directory" in await write.ainvoke({"path": "app", "content": "x"})


async def test_search_stays_inside_the_workspace_and_is_bounded(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("needle = 'outside'\n")
    workspace = tmp_path / "repo"
    (workspace / "app").mkdir(parents=True)
    (workspace / "app" / "many.py").write_text("needle = 1\n" * 150)
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("needle\n")
    (workspace / "linked").symlink_to(outside)
    (workspace / "linked_file.py").symlink_to(outside / "secret.py")
    search = workspace_tools(workspace)["search"]

    answer = await search.ainvoke({"text": "needle"})
    lines = answer.splitlines()
    assert lines[0] == "app/many.py:1: needle = 1"
    assert lines[-1] == "... and 50 more"
    assert len(lines) == 101
    assert "outside" not in answer
    assert ".git" not in answer
    assert "outside the workspace" in await search.ainvoke({"text": "needle", "path": "linked"})
    assert "outside the workspace" in await search.ainvoke({"text": "x", "path": "../outside"})


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("deploy.json", "is protected"),
        ("tests/test_acceptance.py", "is protected"),
        ("../outside.py", "outside the workspace"),
        ("app", "is not a file"),
    ],
)
async def test_delete_file_refuses_protected_and_outside_paths(
    tmp_path: Path, path: str, answer: str
) -> None:
    workspace = tmp_path / "repo"
    for name in ("deploy.json", "tests/test_acceptance.py", "app/calc.py"):
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_text("kept\n")
    (tmp_path / "outside.py").write_text("kept\n")
    delete = workspace_tools(workspace)["delete_file"]

    assert answer in await delete.ainvoke({"path": path})
    assert (workspace / "deploy.json").read_text() == "kept\n"
    assert (workspace / "tests/test_acceptance.py").read_text() == "kept\n"
    assert (tmp_path / "outside.py").read_text() == "kept\n"
    assert await delete.ainvoke({"path": "app/calc.py"}) == "deleted app/calc.py"
    assert not (workspace / "app" / "calc.py").exists()


class GreenRunner:
    """A test runner that answers at once: these tests are about the loop, not pytest."""

    __test__ = False

    async def run(self, workspace: Path) -> TestReport:
        return TestReport(passed=2, failed=0)


def task_in(workspace: Path, max_iterations: int = 1) -> CodingTask:
    for name, content in SERVICE_FILES.items():
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_text(content)
    request = code_requested("file:///unused", "0" * 40)
    return CodingTask("p", request.spec, workspace, max_iterations=max_iterations)


async def test_a_run_past_its_time_limit_stops_and_says_why(tmp_path: Path) -> None:
    release, answered = threading.Event(), threading.Event()

    def stalled_model(_body: dict[str, Any]) -> Reply:
        # Holds the answer until the test is over; the coder must not wait for it.
        release.wait(60)
        answered.set()
        return Reply.text("too late")

    with ScriptedOpenAI(stalled_model) as server:
        agent = coder(server, time_limit_seconds=0.5, runner=GreenRunner())
        try:
            outcome = await agent.run(task_in(tmp_path), no_heartbeat)
            returned_before_the_answer = not answered.is_set()
        finally:
            release.set()

    assert returned_before_the_answer
    assert len(server.requests) == 1
    assert not outcome.passed
    assert outcome.reason == "stopped at the coder's time limit of 0.5 s after 0 test runs"


async def test_old_tool_results_are_trimmed_to_a_stub(tmp_path: Path) -> None:
    calls = iter(range(10))

    def reader(_body: dict[str, Any]) -> Reply:
        if next(calls, None) is None:
            return Reply.text("Read everything")
        return Reply.tool_call("read_file", {"path": "app/calc.py"})

    with ScriptedOpenAI(reader) as server:
        agent = coder(server, runner=GreenRunner())
        outcome = await agent.run(task_in(tmp_path), no_heartbeat)

    assert "changed nothing" in outcome.reason
    answers = tool_contents(server.requests[-1])
    assert len(answers) == 10
    stub = "[earlier read_file output trimmed to keep the conversation short; call the tool again"
    assert all(answer.startswith(stub) for answer in answers[:2]), answers[:2]
    assert answers[2:] == [SERVICE_FILES["app/calc.py"]] * 8


def test_the_task_spells_out_schedules_integrations_and_storage() -> None:
    spec = code_requested("git://127.0.0.1/calculator.git", "a" * 40).spec.model_copy(
        update={
            "schedules": (Schedule(name="hourly_sync", every_seconds=3600, action="sync rates"),),
            "integrations": (
                Integration(
                    name="Fixer", base_url="https://api.fixer.io/v1", env_vars=("FIXER_API_KEY",)
                ),
            ),
            "persistence": Persistence(kind=PersistenceKind.POSTGRES, stores="rates"),
        }
    )
    message = task_message(spec, TestReport(passed=3, failed=0))
    assert (
        "Schedule hourly_sync: app/worker.py already runs the function named after it every "
        "3600 seconds" in message
    )
    assert "sync rates" in message
    assert "Call Fixer at https://api.fixer.io/v1 with FIXER_API_KEY" in message
    assert "PostgreSQL at DATABASE_URL" in message
    assert "rates" in message
    plain = task_message(code_requested("git://h/c.git", "a" * 40).spec, TestReport(1, 0))
    assert "Requirements beyond the scaffold" not in plain


#: The spec's executable checks as the repo step renders them: here one that the scaffold
#: does not satisfy yet (no /subtract endpoint) and one that it does (/add).
ACCEPTANCE_TESTS = (
    "from fastapi.testclient import TestClient\n\n"
    "from app.main import app\n\n\n"
    "def test_http_check_add() -> None:\n"
    "    assert TestClient(app).get('/add?a=2&b=3').json() == {'sum': 5}\n\n\n"
    "def test_http_check_subtract() -> None:\n"
    "    assert TestClient(app).get('/subtract?a=5&b=3').json() == {'difference': 2}\n"
)
GREEN_ACCEPTANCE = ACCEPTANCE_TESTS.split("\n\n\ndef test_http_check_subtract")[0] + "\n"


async def scripted_run(
    url: str, base: str, max_iterations: int, *replies: Reply
) -> tuple[EngineerResult, ScriptedOpenAI]:
    """One request through the engineer step with the model's answers scripted in order."""
    with ScriptedOpenAI() as server:
        server.replies(*replies)
        result = await coder_service(server, max_iterations).handle(
            code_requested(url, base), no_heartbeat
        )
    return result, server


def first_prompt(server: ScriptedOpenAI) -> str:
    return str(server.requests[0]["messages"][-1]["content"])


async def test_a_run_whose_acceptance_check_stays_red_fails_with_that_reason(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo({**SERVICE_FILES, "tests/test_acceptance.py": ACCEPTANCE_TESTS})
    result, server = await scripted_run(
        url, base, 1,
        # A change, green everywhere else: the endpoint the check asks for is still missing.
        Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
        Reply.text("Implemented subtract"),
    )

    assert "1 of 2 acceptance checks (tests/test_acceptance.py) fail before any change" in (
        first_prompt(server)
    )
    event = result.event
    assert isinstance(event, CodeFailed), event
    assert event.reason.startswith(
        "gave up after 1 iterations: the acceptance checks still fail "
        "(tests/test_acceptance.py): tests.test_acceptance::test_http_check_subtract"
    ), event.reason
    assert remote_head(url, tmp_path) == base


async def test_acceptance_checks_green_at_baseline_are_said_and_must_still_pass(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo({**BROKEN_FILES, "tests/test_acceptance.py": GREEN_ACCEPTANCE})
    # Fixed code, and the acceptance file kept out of collection, with a filler test so the
    # count still reaches the baseline's: green by the numbers, but not by the checks.
    hide = "collect_ignore = ['test_acceptance.py']\n"
    filler = "def test_filler() -> None:\n    assert True\n"
    result, server = await scripted_run(
        url, base, 1,
        Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
        Reply.tool_call("write_file", {"path": "tests/conftest.py", "content": hide}),
        Reply.tool_call("write_file", {"path": "tests/test_filler.py", "content": filler}),
        Reply.text("Implemented subtract"),
    )

    assert "All 1 acceptance checks (tests/test_acceptance.py) already pass before any change" in (
        first_prompt(server)
    )
    event = result.event
    assert isinstance(event, CodeFailed), event
    assert "the acceptance checks did not pass (tests/test_acceptance.py; skipped or not " in (
        event.reason
    )
    assert "tests.test_acceptance::test_http_check_add" in event.reason
    assert remote_head(url, tmp_path) == base


#: An entry point the tests never import: green tests, and an app that cannot start.
CRASHING_MAIN = "from app.server_settings import bind_address\n"


async def test_an_app_whose_health_breaks_fails_before_the_commit_with_the_reason(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(BROKEN_FILES)
    result, _server = await scripted_run(
        url, base, 1,
        Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
        Reply.tool_call("write_file", {"path": "app/__main__.py", "content": CRASHING_MAIN}),
        Reply.text("Implemented subtract"),
    )

    event = result.event
    assert isinstance(event, CodeFailed), event
    assert "the app does not start the way the deployer starts it" in event.reason
    assert "`python -m app` exited with status 1 before GET /health answered" in event.reason
    assert "ModuleNotFoundError: No module named 'app.server_settings'" in event.reason
    assert remote_head(url, tmp_path) == base


async def test_a_crashing_app_goes_back_to_the_model_like_a_failing_test(
    make_repo: RepoFactory, tmp_path: Path
) -> None:
    url, base = make_repo(BROKEN_FILES)
    result, server = await scripted_run(
        url, base, 2,
        Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
        Reply.tool_call("write_file", {"path": "app/__main__.py", "content": CRASHING_MAIN}),
        Reply.text("Implemented subtract"),
        Reply.tool_call(
            "write_file",
            {"path": "app/__main__.py", "content": SERVICE_FILES["app/__main__.py"]},
        ),
        Reply.text("Implemented subtract; the app starts again"),
    )

    retry = server.requests[3]["messages"][-1]["content"]
    assert "Iteration 1" in retry
    assert "No module named 'app.server_settings'" in retry
    event = result.event
    assert isinstance(event, CodeGenerated), event
    assert event.iterations == 2
    assert remote_head(url, tmp_path) == event.commit != base


async def test_the_first_request_carries_the_repository_map_and_conventions(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "repo"
    (workspace / ".git").mkdir(parents=True)
    (workspace / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (workspace / "app" / "__pycache__").mkdir(parents=True)
    (workspace / "app" / "__pycache__" / "calc.cpython-311.pyc").write_bytes(b"\0")
    with ScriptedOpenAI(lambda _body: Reply.text("Nothing to do")) as server:
        await coder(server, runner=GreenRunner()).run(task_in(workspace), no_heartbeat)

    prompt = first_prompt(server)
    size = len(SERVICE_FILES["app/calc.py"].encode())
    assert "Files in the repository:\n" in prompt
    assert f"app/calc.py ({size} bytes)" in prompt
    assert f"deploy.json ({len(SERVICE_FILES['deploy.json'])} bytes)" in prompt
    assert ".git" not in prompt.split("Files in the repository:")[1].split("\n\n")[0]
    assert "__pycache__" not in prompt
    assert "Template conventions:" in prompt
    assert "HTTP routes live in `app/api.py`" in prompt
    assert "`GET /health` must answer 200" in prompt
