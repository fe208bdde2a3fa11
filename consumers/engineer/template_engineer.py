"""The offline coding agent: the scaffold is the code, and its own tests must pass.

With no LLM configured the repo step's template already is the service; this agent changes
nothing and proves the scaffold installs and passes its tests, so the commit to deploy is the
scaffold commit itself. A failing scaffold is reported as a failure with the failing tests,
never papered over.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from consumers.engineer.agent import AgentMode, AgentOutcome, CodingTask, Heartbeat
from consumers.engineer.test_runner import PytestRunner, TestReport


class VerifyingAgent(ABC):
    """A `CodingAgent` that writes nothing: the workspace's own tests pass, or it fails.

    Subclasses say what a pass means to the user and how a failure is introduced.
    """

    mode: AgentMode = "offline"

    def __init__(self, runner: PytestRunner) -> None:
        self._runner = runner

    @abstractmethod
    def passed(self, task: CodingTask, report: TestReport) -> str:
        """What the user reads when the tests pass."""

    @abstractmethod
    def failed(self, report: TestReport) -> str:
        """The failure's reason, with the failing tests."""

    async def run(self, task: CodingTask, heartbeat: Heartbeat) -> AgentOutcome:
        report = await self._runner.run(task.workspace)
        if report.ok:
            return AgentOutcome(
                passed=True, iterations=0, report=report, summary=self.passed(task, report)
            )
        return AgentOutcome(
            passed=False, iterations=0, report=report, summary="", reason=self.failed(report)
        )


class TemplateEngineer(VerifyingAgent):
    """`CodingAgent` for offline mode: verify, do not write."""

    def passed(self, task: CodingTask, report: TestReport) -> str:
        return (
            f"Offline mode: the {task.spec.primary_kind.value} scaffold for "
            f"{task.spec.name} was verified as generated ({report.passed} tests pass)."
        )

    def failed(self, report: TestReport) -> str:
        return f"offline mode: the scaffold's own tests fail: {report.summary()}"
