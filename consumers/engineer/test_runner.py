"""Runs a generated repository's own tests in its own virtualenv and counts the results.

Every agent mode ends here: the engineer never reports a commit whose tests it did not run.
The venv is made with the running interpreter (`--without-pip`; this interpreter's pip
installs into it with `pip --python`, which is several times faster than bootstrapping pip in
every venv) and lives beside the workspace, never inside it, so it is neither committed nor
shown to a coding model. Counts come from pytest's JUnit XML, not from parsing its console.

The code under test runs with a minimal environment: nothing of this process's environment
(Vault credentials, database URLs) is visible to generated code.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

#: Failure details shown to a person or a model are cut to this many characters each.
_DETAIL_CHARS = 1500
_OUTPUT_TAIL_CHARS = 4000
#: Variables pip needs to find the package index (and its local mirrors) and proxies.
_PIP_ENV_PREFIXES = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                     "no_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


@dataclass(frozen=True)
class FailedTest:
    """One failing or erroring test (or setup step) and the first part of its message."""

    name: str
    detail: str


@dataclass(frozen=True)
class TestReport:
    """The result of one test run; `ok` means at least one test ran and none failed."""

    __test__ = False  # a result type, not a pytest test class

    passed: int
    failed: int
    errors: int = 0
    skipped: int = 0
    failures: tuple[FailedTest, ...] = field(default=())
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.passed > 0 and self.failed == 0 and self.errors == 0

    def summary(self, limit: int = 5) -> str:
        """One line of counts, then the first `limit` failing tests with their messages."""
        counts = f"{self.passed} passed, {self.failed} failed, {self.errors} errors"
        if self.ok:
            return counts
        if not self.failures:
            tail = self.output[-_DETAIL_CHARS:].strip()
            reason = "no tests ran" if self.passed == 0 and not tail else tail
            return f"{counts}: {reason}"
        lines = [counts + ":"]
        for failure in self.failures[:limit]:
            lines.append(f"- {failure.name}: {failure.detail}")
        if len(self.failures) > limit:
            lines.append(f"- ... and {len(self.failures) - limit} more")
        return "\n".join(lines)


class PytestRunner:
    """Creates (once per requirements content) a venv next to a workspace and runs pytest in it."""

    def __init__(
        self,
        *,
        python: str = sys.executable,
        scratch: Path | None = None,
        install_timeout: float = 600.0,
        test_timeout: float = 300.0,
    ) -> None:
        self._python = python
        self._scratch = scratch
        self._install_timeout = install_timeout
        self._test_timeout = test_timeout

    async def run(self, workspace: Path) -> TestReport:
        """Install the workspace's requirements if they changed, then run its tests."""
        # Beside the checkout (the workspace is `<tmp>/repo`), so git and the model never see it.
        venv = (self._scratch or workspace.parent) / "venv"
        install_failure = await self._ensure_venv(workspace, venv)
        if install_failure is not None:
            return install_failure
        junit = venv.parent / "junit.xml"
        junit.unlink(missing_ok=True)
        command = [
            str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--junitxml={junit}", "-o", "junit_family=xunit2",
        ]
        code, output = await _run(command, workspace, _test_env(venv), self._test_timeout)
        if code is None:
            return TestReport(
                passed=0, failed=0, errors=1,
                failures=(FailedTest("pytest", f"timed out after {self._test_timeout:.0f} s"),),
                output=output,
            )
        if not junit.exists():
            return TestReport(
                passed=0, failed=0, errors=1,
                failures=(FailedTest("pytest", f"exited {code} without a report"),),
                output=output,
            )
        return _parse_junit(junit, output)

    async def _ensure_venv(self, workspace: Path, venv: Path) -> TestReport | None:
        requirements = workspace / "requirements.txt"
        content = requirements.read_bytes() if requirements.is_file() else b""
        digest = hashlib.sha256(content).hexdigest()
        marker = venv / ".requirements-sha256"
        if marker.is_file() and marker.read_text() == digest:
            return None
        if not (venv / "bin" / "python").exists():
            code, output = await _run(
                [self._python, "-m", "venv", "--without-pip", str(venv)],
                workspace, _pip_env(), self._install_timeout,
            )
            if code != 0:
                raise RuntimeError(f"could not create a virtualenv at {venv}: {output[-500:]}")
        install = [self._python, "-m", "pip", "--python", str(venv / "bin" / "python"),
                   "install", "-q", "--disable-pip-version-check", "pytest"]
        if content:
            install += ["-r", str(requirements)]
        code, output = await _run(install, workspace, _pip_env(), self._install_timeout)
        if code != 0:
            detail = "timed out" if code is None else _tail(output, _DETAIL_CHARS)
            return TestReport(
                passed=0, failed=0, errors=1,
                failures=(FailedTest("pip install -r requirements.txt", detail),),
                output=output,
            )
        marker.write_text(digest)
        return None


def _test_env(venv: Path) -> dict[str, str]:
    home = venv.parent / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(venv),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


def _pip_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    env["HOME"] = os.environ.get("HOME", "/tmp")  # noqa: S108 - pip's cache needs some home
    for name, value in os.environ.items():
        if name.startswith(_PIP_ENV_PREFIXES):
            env[name] = value
    return env


async def _run(
    command: list[str], cwd: Path, env: dict[str, str], limit: float
) -> tuple[int | None, str]:
    """Run a command; return (exit code, or None after `limit` seconds, combined output)."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        # The whole session: a test may have started servers of its own.
        os.killpg(process.pid, signal.SIGKILL)
        stdout, _ = await process.communicate()
        return None, stdout.decode(errors="replace")
    return process.returncode, stdout.decode(errors="replace")


def _tail(text: str, chars: int) -> str:
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


def _parse_junit(path: Path, output: str) -> TestReport:
    root = ET.parse(path).getroot()  # noqa: S314 - written by our pytest run a moment ago
    passed = failed = errors = skipped = 0
    failures: list[FailedTest] = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        outcome = next(
            (child for child in case if child.tag in ("failure", "error", "skipped")), None
        )
        if outcome is None:
            passed += 1
            continue
        if outcome.tag == "skipped":
            skipped += 1
            continue
        if outcome.tag == "failure":
            failed += 1
        else:
            errors += 1
        message = outcome.get("message") or ""
        detail = (outcome.text or message).strip()
        failures.append(FailedTest(name, _tail(detail or message, _DETAIL_CHARS)))
    return TestReport(
        passed=passed, failed=failed, errors=errors, skipped=skipped,
        failures=tuple(failures), output=_tail(output, _OUTPUT_TAIL_CHARS),
    )
