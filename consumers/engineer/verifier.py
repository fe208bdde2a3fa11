"""Verifying an adopted repository: its own tests, in the sandbox, and nothing written.

An adopted repository is a person's existing code: the engineer neither generates nor changes
it, whatever agent is configured. It proves the code installs and passes its own tests in the
same sandbox as generated code (`test_runner.py`), so a repository whose tests fail is never
deployed, and reports the adopted commit itself.
"""

from __future__ import annotations

from consumers.engineer.agent import CodingTask
from consumers.engineer.template_engineer import VerifyingAgent
from consumers.engineer.test_runner import TestReport


class RepositoryVerifier(VerifyingAgent):
    """`CodingAgent` for `CodeRequested.verify_only`: run the tests, never write."""

    def passed(self, task: CodingTask, report: TestReport) -> str:
        return (
            f"The adopted repository {task.spec.name} was verified as it is "
            f"({report.passed} tests pass in the sandbox)."
        )

    def failed(self, report: TestReport) -> str:
        return f"the adopted repository's own tests fail: {report.summary()}"
