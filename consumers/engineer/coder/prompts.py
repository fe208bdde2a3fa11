"""What the coding model is told: its job, the spec, and how the tests stand."""

from __future__ import annotations

from consumers.engineer.test_runner import TestReport
from contracts.spec import ProjectSpec

SYSTEM_PROMPT = """\
You are the engineer of a code generation platform. You work inside one Python project whose \
layout was generated from a template: `requirements.txt`, the `app/` package, `tests/` (pytest) \
and `deploy.json`. Implement the specification by editing files with the tools. Keep the \
existing structure, health endpoint and deployment files working, add tests for what you build, \
and keep every test passing. Never write secret values into files: secrets reach the service as \
environment variables named in the specification. Use list_files and read_file before changing \
code; write whole files with write_file; call run_tests to check your work. When you are done, \
stop calling tools and answer with one line summarising what you changed, for the user."""


def task_message(spec: ProjectSpec, report: TestReport, change: str = "") -> str:
    """The first user message: the spec as JSON and the tests' state before any change; for a
    revision of a live service, also the change asked for (the workspace is its current code)."""
    revision = (
        "This service is live and the workspace holds its current code. Its owner asked for "
        f"this change, which the specification below already includes:\n{change.strip()}\n\n"
        "Change the existing code for it; keep everything else working.\n\n"
        if change.strip()
        else ""
    )
    return (
        f"{revision}Specification (JSON):\n"
        f"{spec.model_dump_json(indent=2)}\n\n"
        f"Current test results:\n{report.summary(limit=10)}\n\n"
        "Implement the specification so that all tests, old and new, pass."
    )


def retry_message(iteration: int, report: TestReport) -> str:
    """After an iteration whose tests failed: what failed, so the model can fix it."""
    return (
        f"Iteration {iteration}: the tests do not pass yet.\n{report.summary(limit=10)}\n\n"
        "Fix the code (or a wrong test) and answer with a one-line summary when done."
    )
