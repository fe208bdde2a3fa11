"""What a coding run must leave alone and must achieve, checked against the workspace itself.

A run used to pass by doing nothing: a scaffold's tests are green before any change, so an
unchanged workspace (or one whose failing tests were deleted) looked like finished work. The
guard closes those doors. It is taken before the run and asked after every test run:
- the protected files are byte for byte what they were: the health endpoint the deployer
  probes, `deploy.json` that says how the service runs, and the acceptance tests rendered
  from the spec. The tools refuse to write them, but model-written tests run with the
  workspace writable, so only a hash comparison proves they were not changed;
- the workspace differs from how the run found it (the base commit): "no change" is a failure;
- at least as many tests pass as existed before the run: removing or skipping a failing test
  is not a fix;
- every acceptance test that ran before the run (`tests/test_acceptance.py`, the spec's
  executable checks) passes, by name. They are meant to start red, describing what the
  scaffold does not do yet; when the scaffold already satisfies them (CRUD checks on an
  entity the template serves) they start green, the model is told so, and they still must
  pass at the end: however the counts add up, a run never succeeds without them.
The snapshot reads files rather than asking git, so the same check runs in the coding
container, whose image has no git and whose user does not own the checkout.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Final

from consumers.engineer.test_runner import TestReport

#: Files the platform relies on, relative to the workspace root. `app/main.py` declares the
#: scaffold's `GET /health` (the deployer's probe) and `app/healthcheck.py` is the container's
#: probe of it; `tests/test_acceptance.py` holds the spec's executable checks when it has any.
PROTECTED_FILES: Final = (
    "app/main.py",
    "app/healthcheck.py",
    "deploy.json",
    "tests/test_acceptance.py",
)

#: The spec's executable checks, rendered by the repo step; JUnit names their tests
#: `tests.test_acceptance::<test>`.
ACCEPTANCE_TESTS: Final = "tests/test_acceptance.py"
_ACCEPTANCE_PREFIX: Final = "tests.test_acceptance::"

#: Directories and suffixes that test runs leave behind or the scaffold ignores: not changes.
_IGNORED_PARTS: Final = frozenset({".git", "__pycache__", ".pytest_cache", ".venv", "data"})
_IGNORED_SUFFIXES: Final = (".pyc",)

#: A file's content hash; None when the file does not exist.
Digest = str | None


def is_protected(relative: PurePosixPath | str) -> bool:
    """Whether `relative` (a path inside the workspace) names a protected file."""
    return PurePosixPath(relative).as_posix() in PROTECTED_FILES


def tests_problem(report: TestReport, baseline: TestReport) -> str:
    """Why `report` does not count as done given the tests that existed before; "" if it does.

    The bar is every test that ran at baseline (passed, failed or erroring), so deleting the
    failing test leaves fewer passing tests than the bar, not a green suite; and every
    acceptance test of the baseline must be among the passed ones.
    """
    if not report.ok:
        failing = [failure.name for failure in report.failures if _is_acceptance(failure.name)]
        named = (
            f"the acceptance checks still fail ({ACCEPTANCE_TESTS}): {', '.join(failing)}\n"
            if failing
            else ""
        )
        return named + report.summary(limit=10)
    required = baseline.passed + baseline.failed + baseline.errors
    if report.passed < required:
        return (
            f"only {report.passed} tests pass, fewer than the {required} tests the project "
            "had before this run: tests were removed or skipped instead of made to pass"
        )
    missing = [name for name in _acceptance(baseline) if name not in report.passed_tests]
    if missing:
        return (
            f"the acceptance checks did not pass ({ACCEPTANCE_TESTS}; skipped or not "
            f"collected): {', '.join(missing)}"
        )
    return ""


def acceptance_note(baseline: TestReport) -> str:
    """How the acceptance checks stand before any change, for the model and the log; "" when
    the project has none."""
    passing = [name for name in baseline.passed_tests if _is_acceptance(name)]
    failing = [failure.name for failure in baseline.failures if _is_acceptance(failure.name)]
    if failing:
        return (
            f"{len(failing)} of {len(passing) + len(failing)} acceptance checks "
            f"({ACCEPTANCE_TESTS}) fail before any change: implement the behaviour they "
            "describe; the run succeeds only when all of them pass."
        )
    if passing:
        return (
            f"All {len(passing)} acceptance checks ({ACCEPTANCE_TESTS}) already pass before "
            "any change: the scaffold does what they check. They must still pass when you are "
            "done; implement the rest of the specification all the same."
        )
    return ""


def _acceptance(report: TestReport) -> list[str]:
    """Every acceptance test `report` ran, passed or not."""
    names = [*report.passed_tests, *(failure.name for failure in report.failures)]
    return [name for name in names if _is_acceptance(name)]


def _is_acceptance(test_name: str) -> bool:
    return test_name.startswith(_ACCEPTANCE_PREFIX)


class WorkspaceGuard:
    """A snapshot of a workspace taken before a run, and the problems found against it since."""

    def __init__(self, workspace: Path) -> None:
        self._root = workspace.resolve()
        self._before = self._tree()

    def problem(self) -> str:
        """Why the workspace cannot be shipped as it is now; "" when it can."""
        now = self._tree()
        changed = [path for path in PROTECTED_FILES if self._before.get(path) != now.get(path)]
        if changed:
            return (
                f"protected files were changed: {', '.join(changed)}; the platform relies on "
                "them (health endpoint, deployment, acceptance tests) and they must stay as "
                "the scaffold wrote them"
            )
        if now == self._before:
            return "the model changed nothing: the workspace is identical to the base commit"
        return ""

    def _tree(self) -> dict[str, Digest]:
        """Every file's content hash by relative path; symlinks are recorded by their target."""
        files: dict[str, Digest] = {}
        for directory, dirs, names in os.walk(self._root):
            dirs[:] = [name for name in dirs if name not in _IGNORED_PARTS]
            for name in names:
                if name.endswith(_IGNORED_SUFFIXES):
                    continue
                path = Path(directory, name)
                relative = path.relative_to(self._root).as_posix()
                if path.is_symlink():
                    files[relative] = "symlink:" + os.readlink(path)
                elif path.is_file():
                    files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        return files
