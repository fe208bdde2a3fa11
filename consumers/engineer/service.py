"""The engineer step: `CodeRequested` → code whose tests pass, pushed → `CodeGenerated`.

Plain async Python over two ports: a `CodingAgent` (offline template, in-process LangGraph
loop or container) and git workspaces. The step owns the parts every mode shares: checking
out the base commit, returning an earlier result for the same base commit instead of running
again, keeping the broker informed while the agent works, committing and pushing.

Outcomes: a task the agent cannot finish (tests still red, scaffold broken, base commit gone,
branch moved) is a `CodeFailed` event for the coordinator and the user, not an exception.
Infrastructure trouble (`GitUnavailable`, the model endpoint or the container engine down)
propagates, so the runtime retries the message.

With memory configured, the agent gets the project's memory scoped to it and its owner
(`coder/memory_tool.py`); without it, or without a known owner, it works from the workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from consumers.engineer.agent import AgentMode, CodingAgent, CodingTask, Heartbeat, LLMUsage
from consumers.engineer.coder.memory_tool import ProjectMemory
from consumers.engineer.keep_alive import keep_alive
from consumers.engineer.workspace import (
    BaseCommitMissing,
    BranchMoved,
    EngineerCommit,
    GitWorkspaces,
    Workspace,
)
from contracts.events import CodeFailed, CodeGenerated, CodeRequested
from infra.memory_search import MemorySearch
from infra.memory_types import Scope


@dataclass(frozen=True)
class EngineerResult:
    """The outcome event and the model usage to record against the project."""

    event: CodeGenerated | CodeFailed
    usage: tuple[LLMUsage, ...] = ()


class EngineerService:
    """Runs one coding agent on one request; safe to run again for the same request."""

    def __init__(
        self,
        agent: CodingAgent,
        workspaces: GitWorkspaces,
        *,
        max_iterations: int,
        heartbeat_seconds: float = 10.0,
        actor: str = "engineer",
        verifier: CodingAgent | None = None,
        memory: MemorySearch | None = None,
    ) -> None:
        self._agent = agent
        #: The project's code and history (through the indexer); None runs without memory.
        self._memory = memory
        #: Runs an adopted repository's tests without writing (`CodeRequested.verify_only`).
        self._verifier = verifier or agent
        self._workspaces = workspaces
        self._max_iterations = max_iterations
        self._heartbeat_seconds = heartbeat_seconds
        self._actor = actor

    @property
    def mode(self) -> AgentMode:
        return self._agent.mode

    async def handle(
        self, request: CodeRequested, heartbeat: Heartbeat, *, owner: str | None = None
    ) -> EngineerResult:
        """Produce the request's outcome event; raises only for retryable infrastructure errors.

        `owner` is the project's user, whose memory of this project the agent may search.
        """
        try:
            async with self._workspaces.checkout(
                request.clone_url, request.base_commit, request.default_branch
            ) as workspace:
                return await self._in_workspace(request, workspace, heartbeat, owner)
        except BaseCommitMissing as exc:
            return self._failed(request, str(exc), iterations=0)

    async def _in_workspace(
        self,
        request: CodeRequested,
        workspace: Workspace,
        heartbeat: Heartbeat,
        owner: str | None,
    ) -> EngineerResult:
        earlier = await workspace.previous_result()
        if earlier is not None:
            return EngineerResult(self._generated_from(request, earlier))
        task = CodingTask(
            project_id=str(request.project_id),
            spec=request.spec,
            workspace=workspace.path,
            max_iterations=self._max_iterations,
            request_id=request.event_id,
            change=request.change,
            memory=(
                ProjectMemory(self._memory, Scope(owner, request.project_id))
                if self._memory is not None and owner
                else None
            ),
        )
        agent = self._verifier if request.verify_only else self._agent
        async with keep_alive(heartbeat, self._heartbeat_seconds):
            outcome = await agent.run(task, heartbeat)
        if not outcome.passed:
            return self._failed(request, outcome.reason, outcome.iterations, outcome.usage)
        if request.verify_only:
            # Nothing is pushed: whatever the tests wrote into the checkout is not the code.
            return EngineerResult(
                request.derive(
                    CodeGenerated,
                    actor=self._actor,
                    project_id=request.project_id,
                    commit=request.base_commit,
                    mode=agent.mode,
                    tests_passed=outcome.report.passed,
                    summary=outcome.summary,
                )
            )
        try:
            async with keep_alive(heartbeat, self._heartbeat_seconds):
                pushed = await workspace.commit_and_push(
                    summary=outcome.summary,
                    mode=self._agent.mode,
                    iterations=outcome.iterations,
                    tests_passed=outcome.report.passed,
                    tests_failed=outcome.report.failed,
                )
        except BranchMoved as exc:
            return self._failed(request, str(exc), outcome.iterations, outcome.usage)
        event = request.derive(
            CodeGenerated,
            actor=self._actor,
            project_id=request.project_id,
            # No change (offline, or an agent that found nothing to do): the verified base is it.
            commit=pushed or request.base_commit,
            mode=self._agent.mode,
            iterations=outcome.iterations,
            tests_passed=outcome.report.passed,
            tests_failed=outcome.report.failed,
            summary=outcome.summary,
        )
        return EngineerResult(event, outcome.usage)

    def _generated_from(self, request: CodeRequested, earlier: EngineerCommit) -> CodeGenerated:
        mode: AgentMode = earlier.mode if earlier.mode in get_args(AgentMode) else "llm"  # type: ignore[assignment]
        return request.derive(
            CodeGenerated,
            actor=self._actor,
            project_id=request.project_id,
            commit=earlier.sha,
            mode=mode,
            iterations=earlier.iterations,
            tests_passed=earlier.tests_passed,
            tests_failed=earlier.tests_failed,
            summary=earlier.summary,
        )

    def _failed(
        self,
        request: CodeRequested,
        reason: str,
        iterations: int,
        usage: tuple[LLMUsage, ...] = (),
    ) -> EngineerResult:
        event = request.derive(
            CodeFailed,
            actor=self._actor,
            project_id=request.project_id,
            reason=reason,
            iterations=iterations,
        )
        return EngineerResult(event, usage)
