"""Verifying an adopted repository: its own tests, in the sandbox, and nothing written.

An adopted repository is a person's existing code: the engineer neither generates nor changes
it, whatever agent is configured. It proves the code installs and passes its own tests in the
same sandbox as generated code (`test_runner.py`), so a repository whose tests fail is never
deployed, and reports the adopted commit itself.
"""

from __future__ import annotations

from consumers.engineer.agent import AgentMode, AgentOutcome, CodingTask, Heartbeat
from consumers.engineer.test_runner import PytestRunner


class RepositoryVerifier:
    """`CodingAgent` for `CodeRequested.verify_only`: run the tests, never write."""

    mode: AgentMode = "offline"

    def __init__(self, runner: PytestRunner) -> None:
        self._runner = runner

    async def run(self, task: CodingTask, heartbeat: Heartbeat) -> AgentOutcome:
        report = await self._runner.run(task.workspace)
        if report.ok:
            summary = (
                f"The adopted repository {task.spec.name} was verified as it is "
                f"({report.passed} tests pass in the sandbox)."
            )
            return AgentOutcome(passed=True, iterations=0, report=report, summary=summary)
        return AgentOutcome(
            passed=False, iterations=0, report=report, summary="",
            reason=f"the adopted repository's own tests fail: {report.summary()}",
        )
