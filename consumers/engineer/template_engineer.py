"""The offline coding agent: the scaffold is the code, and its own tests must pass.

With no LLM configured the repo step's template already is the service; this agent changes
nothing and proves the scaffold installs and passes its tests, so the commit to deploy is the
scaffold commit itself. A failing scaffold is reported as a failure with the failing tests,
never papered over.
"""

from __future__ import annotations

from consumers.engineer.agent import AgentMode, AgentOutcome, CodingTask, Heartbeat
from consumers.engineer.test_runner import PytestRunner


class TemplateEngineer:
    """`CodingAgent` for offline mode: verify, do not write."""

    mode: AgentMode = "offline"

    def __init__(self, runner: PytestRunner) -> None:
        self._runner = runner

    async def run(self, task: CodingTask, heartbeat: Heartbeat) -> AgentOutcome:
        report = await self._runner.run(task.workspace)
        if report.ok:
            summary = (
                f"Offline mode: the {task.spec.primary_kind.value} scaffold for "
                f"{task.spec.name} was verified as generated ({report.passed} tests pass)."
            )
            return AgentOutcome(passed=True, iterations=0, report=report, summary=summary)
        return AgentOutcome(
            passed=False, iterations=0, report=report, summary="",
            reason=f"offline mode: the scaffold's own tests fail: {report.summary()}",
        )
