"""The LLM coding agent: the LangGraph loop on a workspace, priced per model.

It runs with a given chat model and test runner: in this process behind the metering proxy
(`metered_coder.py`), or inside the coding container (`container_entry.py`), which imports it
and nothing of the host side.

No LangGraph checkpointer is used on purpose: the workspace is a temporary checkout that
does not survive the process, so resuming a conversation whose file edits are gone would
mislead the model. A redelivered request starts from the base commit again, and a request
that already succeeded is answered from git (see `workspace.previous_result`).

A run passes only when the guard (`coder/guard.py`) accepts the workspace: green tests, no
fewer than before, the acceptance tests among them, protected files unchanged, and a change
at all; and, with an app checker (the sandboxed test runner in this process), when the app
started as the deployer starts it answers its health endpoint. Its hash check runs once
more after the loop, so a verdict is never older than the last thing that touched the files.
A run also has a wall-clock bound, below the coordinator's step deadline: past it the run
stops and reports why, instead of being cancelled without a word (and redelivered to spend
the same time again).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal
from functools import partial
from typing import cast

import structlog
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage

from consumers.engineer.agent import (
    AgentMode,
    AgentOutcome,
    AppChecker,
    CodingTask,
    Heartbeat,
    LLMUsage,
    TestRunner,
)
from consumers.engineer.coder.graph import build_coder_graph, recursion_limit
from consumers.engineer.coder.guard import WorkspaceGuard, acceptance_note
from consumers.engineer.coder.memory_tool import make_memory_tool
from consumers.engineer.coder.repo_map import repository_map
from consumers.engineer.coder.state import CoderState
from consumers.engineer.coder.tools import make_workspace_tools
from consumers.engineer.test_runner import TestReport
from infra.llm import (
    TokenUsage,
    cost_usd,
    model_name_of,
    usage_from,
)
from infra.settings import LLMSettings

_log = structlog.get_logger(__name__)


class LangGraphCoder:
    """`CodingAgent` that runs the coding loop in this process."""

    mode: AgentMode = "llm"

    def __init__(
        self,
        llm: BaseChatModel,
        runner: TestRunner,
        settings: LLMSettings,
        *,
        time_limit_seconds: float,
        app_checker: AppChecker | None = None,
    ) -> None:
        self._llm = llm
        self._runner = runner
        self._settings = settings
        self._time_limit = time_limit_seconds
        self._app_checker = app_checker

    async def run(self, task: CodingTask, heartbeat: Heartbeat) -> AgentOutcome:
        async def run_tests() -> TestReport:
            return await self._runner.run(task.workspace)

        checker = self._app_checker
        app_problem = None if checker is None else partial(checker.check_app, task.workspace)
        guard = WorkspaceGuard(task.workspace)
        tools = make_workspace_tools(task.workspace, run_tests)
        if task.memory is not None:
            tools.append(make_memory_tool(task.memory))
        graph = build_coder_graph(
            self._llm,
            tools,
            spec=task.spec,
            change=task.change,
            run_tests=run_tests,
            max_iterations=task.max_iterations,
            workspace_problem=guard.problem,
            repo_map=repository_map(task.workspace),
            app_problem=app_problem,
        )
        final: CoderState = {}
        timed_out = False
        deadline = asyncio.timeout(self._time_limit)
        try:
            async with deadline:
                # Each step's state is kept, so a run stopped by the clock still reports
                # its iterations, last test results and token usage.
                async for values in graph.astream(
                    {"messages": []},
                    {"recursion_limit": recursion_limit(task.max_iterations)},
                    stream_mode="values",
                ):
                    if "baseline" not in final and "baseline" in values:
                        _log_acceptance(task, values["baseline"])
                    final = cast(CoderState, values)
        except TimeoutError:
            if not deadline.expired():
                raise  # a timeout of something inside the run, not the run's own clock
            timed_out = True
        report = final.get("report", TestReport(passed=0, failed=0))
        iterations = final.get("iteration", 0)
        messages = final.get("messages", [])
        usage = self._usage(messages)
        if timed_out:
            last = final.get("problem", "")
            return AgentOutcome(
                passed=False, iterations=iterations, report=report, summary="", usage=usage,
                reason=f"stopped at the coder's time limit of {self._time_limit:g} s after "
                f"{iterations} test runs" + (f"; the last one: {last}" if iterations else ""),
            )
        problem = final["problem"] or guard.problem()
        if not problem:
            return AgentOutcome(
                passed=True, iterations=iterations, report=report,
                summary=_summary(messages, task), usage=usage,
            )
        return AgentOutcome(
            passed=False, iterations=iterations, report=report, summary="", usage=usage,
            reason=f"gave up after {iterations} iterations: {problem}",
        )

    def _usage(self, messages: list[AnyMessage]) -> tuple[LLMUsage, ...]:
        per_model: dict[str, TokenUsage] = defaultdict(TokenUsage)
        for message in messages:
            if isinstance(message, AIMessage):
                model = model_name_of(message, self._settings.model)
                per_model[model] = per_model[model] + usage_from(message)
        return tuple(
            LLMUsage(
                model=model,
                prompt_tokens=tokens.prompt_tokens,
                completion_tokens=tokens.completion_tokens,
                cost_usd=Decimal(str(cost_usd(tokens, self._settings))),
            )
            for model, tokens in per_model.items()
        )


def _log_acceptance(task: CodingTask, baseline: TestReport) -> None:
    """Say in the log how the spec's acceptance checks stood before the model's first call."""
    note = acceptance_note(baseline)
    if note:
        _log.info("engineer.acceptance_at_baseline", project_id=task.project_id, note=note)


def _summary(messages: list[AnyMessage], task: CodingTask) -> str:
    """The model's last plain answer, which the prompt asks to be a one-line summary."""
    for message in reversed(messages):
        if isinstance(message, AIMessage) and not message.tool_calls and message.text.strip():
            return message.text.strip()
    return f"Implemented {task.spec.name} from its specification"
