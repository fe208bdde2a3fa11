"""The `CodingAgent` port: what the engineer step asks of any coding agent, and what it gets back.

The step (`service.py`) prepares a git workspace at the requested commit and hands it to an
agent; the agent changes files until the repository's own tests pass, or gives up. Three
adapters implement it: the offline `TemplateEngineer` (verifies the scaffold as it is), the
in-process `LangGraphCoder` and the `ContainerCoder` (the same loop inside a container).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal, Protocol

from consumers.engineer.coder.memory_tool import ProjectSearch
from consumers.engineer.test_runner import TestReport
from contracts.spec import ProjectSpec

#: Tells the broker the step is still alive; long waits call it every few seconds.
Heartbeat = Callable[[], Awaitable[None]]

AgentMode = Literal["offline", "llm", "container"]


@dataclass(frozen=True)
class CodingTask:
    """One job for an agent: make the repository in `workspace` satisfy `spec`, tests green."""

    project_id: str
    spec: ProjectSpec
    workspace: Path
    max_iterations: int
    #: The event that asked for the work: the LLM calls of the run are recorded against it.
    request_id: uuid.UUID | None = None
    #: For a revision of a live project: the change asked for (the workspace holds the
    #: project's current code, not the scaffold).
    change: str = ""
    #: The project's memory (its indexed code and specs), when memory is configured and the
    #: owner is known: a `ProjectMemory` scoped on the host (inside the coding container, the
    #: socket client that asks the host). The coder offers it as the `search_memory` tool.
    memory: ProjectSearch | None = None


class TestRunner(Protocol):
    """Runs a workspace's own tests somewhere model-written code may run, and counts them."""

    async def run(self, workspace: Path) -> TestReport: ...


class AppChecker(Protocol):
    """Starts a workspace's app the way the deployer would and checks its health endpoint."""

    async def check_app(self, workspace: Path) -> str:
        """"" when the app answers its health endpoint; otherwise why not."""
        ...


@dataclass(frozen=True)
class LLMUsage:
    """Tokens one model spent on a task, priced with the configured per-1k rates."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal


@dataclass(frozen=True)
class AgentOutcome:
    """What an agent reports; `passed` is only true when the last test run was green."""

    passed: bool
    iterations: int
    report: TestReport
    summary: str
    usage: tuple[LLMUsage, ...] = field(default=())
    #: Why the agent stopped without green tests (empty when `passed`).
    reason: str = ""


class CodingAgent(Protocol):
    """Changes the files of a checked-out workspace until its tests pass, within a bound.

    An agent never commits or pushes: the step does, so every mode shares one idempotent
    commit-and-push path. An agent raises only for infrastructure failures (the model's
    endpoint or the container engine unreachable); a task it cannot complete is an
    `AgentOutcome` with `passed=False` and a reason a person can act on.
    """

    mode: AgentMode

    async def run(self, task: CodingTask, heartbeat: Heartbeat) -> AgentOutcome: ...
