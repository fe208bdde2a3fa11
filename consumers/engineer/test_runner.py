"""Runs a generated repository's own tests in a sandbox and counts the results.

Every agent mode ends here: the engineer never reports a commit whose tests it did not run.
Both phases run model-controlled input inside the configured `Sandbox` (bubblewrap by
default, see `sandbox/`), never beside the platform:
- install: a venv per requirements hash, cached under the sandbox cache dir. The venv is made
  with the base interpreter (`--without-pip`) and this interpreter's pip installs into it with
  `pip --python` (several times faster than bootstrapping pip in every venv), with
  `--only-binary=:all:` so no package's setup code runs, and only package names in
  requirements.txt (no options, URLs or paths). This phase may reach the package index; it
  can write only the venv being built and pip's cache.
- test: pytest from that venv, mounted read-only (so projects sharing requirements share
  one venv and none can change it for another), with no network at all, the workspace
  writable, and an allowlisted environment. Counts come from pytest's JUnit XML, written to a
  private results directory, not from parsing its console.
- app: before a commit, the app started the way the deployer starts it (`app_probe.py`),
  in the same sandbox and venv with no network, must answer its health endpoint.
Measured on the offline http scaffold (2 cores): see docs/security.md, "Sandbox".
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from consumers.engineer import app_probe
from consumers.engineer.sandbox import (
    Mount,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    build_sandbox,
    cache_dir_from,
    limits_from,
)
from consumers.engineer.settings import EngineerSettings

#: Failure details shown to a person or a model are cut to this many characters each.
_DETAIL_CHARS = 1500
_OUTPUT_TAIL_CHARS = 4000
#: Variables pip needs to find the package index (and its local mirrors) and proxies.
_PIP_ENV_PREFIXES = (
    "PIP_",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
)
#: pip's configuration files: local paths they name (wheel dirs, file:// indexes, constraints)
#: are shown read-only to the install phase.
_PIP_CONFIG_FILES = (Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"))
_LOCAL_PATH = re.compile(r"(?:file://)?(/[^\s'\",;]+)")
#: The test tool every project gets, whatever its requirements say.
_TEST_TOOLS = ("pytest",)
#: How long the app may take from its start to answering its health endpoint. Measured on
#: 2 cores at load 5: the http scaffold answers in about 3 s, the bot scaffold (aiogram's
#: import) in 13 to 22 s; only an app that never answers waits this long.
APP_START_SECONDS = 60.0
#: The probe's own source, run with `python -I -c` by the venv's interpreter in the sandbox.
_PROBE_SOURCE = Path(app_probe.__file__).read_text(encoding="utf-8")


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
    #: Names (`module::test`) of the tests that passed: the guard checks that the acceptance
    #: tests are among them, not only that the counts add up.
    passed_tests: tuple[str, ...] = field(default=())

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
    """Installs a workspace's requirements (cached per hash) and runs pytest, both sandboxed."""

    def __init__(
        self,
        *,
        sandbox: Sandbox | None = None,
        limits: SandboxLimits | None = None,
        cache_dir: Path | None = None,
        python: str = sys.executable,
        scratch: Path | None = None,
        install_timeout: float | None = None,
        test_timeout: float | None = None,
    ) -> None:
        settings = EngineerSettings() if None in (sandbox, limits, cache_dir) else None
        self._sandbox = sandbox or build_sandbox(_given(settings))
        limits = limits or limits_from(_given(settings))
        self._test_limits = replace(limits, wall_seconds=test_timeout or limits.wall_seconds)
        self._install_limits = replace(
            limits,
            wall_seconds=install_timeout
            or (settings.install_timeout_seconds if settings else max(limits.wall_seconds, 600.0)),
        )
        self._cache = cache_dir or cache_dir_from(_given(settings))
        self._python = python
        self._scratch = scratch
        self._lock = asyncio.Lock()

    async def run(self, workspace: Path) -> TestReport:
        """Install the workspace's requirements if no cached venv has them, then run its tests."""
        venv = await self._venv_for(workspace)
        if isinstance(venv, TestReport):
            return venv
        # Beside the checkout (the workspace is `<tmp>/repo`), so git and the model never see it.
        scratch = Path(tempfile.mkdtemp(prefix="tests-", dir=self._scratch or workspace.parent))
        try:
            return await self._test(workspace, venv, scratch)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def check_app(self, workspace: Path) -> str:
        """ "" when the app, started as the deployer starts it, answers its health endpoint;
        otherwise why not (a crash at import, a wrong start command, no answer in time).

        One sandboxed run: a process start and a few polls on the sandbox's own loopback."""
        venv = await self._venv_for(workspace)
        if isinstance(venv, TestReport):
            return venv.summary()
        scratch = Path(tempfile.mkdtemp(prefix="app-", dir=self._scratch or workspace.parent))
        try:
            home, data = scratch / "home", scratch / "data"
            home.mkdir()
            data.mkdir()
            for path in (home, data, workspace):
                await self._sandbox.prepare_writable(path)
            limits = replace(self._test_limits, wall_seconds=APP_START_SECONDS + 30)
            try:
                result = await self._sandbox.run(
                    [
                        str(venv / "bin" / "python"),
                        "-I",
                        "-c",
                        _PROBE_SOURCE,
                        str(workspace),
                        str(data),
                        str(APP_START_SECONDS),
                    ],
                    workspace,
                    network=False,
                    limits=limits,
                    env=_test_env(venv, home),
                    mounts=[
                        *self._interpreter_mounts(),
                        Mount(venv),
                        Mount(home, writable=True),
                        Mount(data, writable=True),
                    ],
                )
            finally:
                await self._sandbox.reclaim(workspace)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        if result.ok:
            return ""
        detail = result.output.strip() if result.exit_code == 1 else result.describe()
        return f"{app_probe.NOT_STARTED}: {_tail(detail, _OUTPUT_TAIL_CHARS)}"

    async def _test(self, workspace: Path, venv: Path, scratch: Path) -> TestReport:
        results, home = scratch / "results", scratch / "home"
        results.mkdir()
        home.mkdir()
        for path in (results, home, workspace):
            await self._sandbox.prepare_writable(path)
        junit = results / "junit.xml"
        command = [
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            "-o",
            "junit_family=xunit2",
        ]
        try:
            result = await self._sandbox.run(
                command,
                workspace,
                network=False,
                limits=self._test_limits,
                env=_test_env(venv, home),
                mounts=[
                    *self._interpreter_mounts(),
                    Mount(venv),
                    Mount(results, writable=True),
                    Mount(home, writable=True),
                ],
            )
        finally:
            await self._sandbox.reclaim(workspace)
        if result.timed_out or result.output_exceeded:
            return _error("pytest", result.describe(), result.output)
        report = _read_junit(junit, result.output)
        if report is None:
            return _error("pytest", f"{result.describe()} without a report", result.output)
        return report

    async def _venv_for(self, workspace: Path) -> Path | TestReport:
        requirements = workspace / "requirements.txt"
        content = requirements.read_bytes() if requirements.is_file() else b""
        problem = check_requirements(content.decode(errors="replace"))
        if problem is not None:
            return _error("requirements.txt", problem, "")
        parts = [content, self._base_python().encode(), sys.version.encode()]
        key = hashlib.sha256(b"\0".join([*parts, *map(str.encode, _TEST_TOOLS)])).hexdigest()
        venvs = self._cache / "venvs"
        venv = venvs / key
        if (venv / "bin" / "python").exists():
            return venv
        # One install at a time per runner; two engineers racing on one key both build and the
        # second rename loses harmlessly.
        async with self._lock:
            if (venv / "bin" / "python").exists():
                return venv
            return await self._install(workspace, content, venvs, venv)

    async def _install(
        self, workspace: Path, content: bytes, venvs: Path, venv: Path
    ) -> Path | TestReport:
        pip_cache = self._cache / "pip"
        build = await asyncio.to_thread(_make_build_dirs, venvs, pip_cache)
        try:
            for path in (build, pip_cache):
                await self._sandbox.prepare_writable(path)
            # pip reads the bytes that were checked and hashed, not the workspace's file: that
            # one belongs to the engineer (0600 under the stack's umask 077) and could differ.
            checked = build / "requirements.txt"
            if content:
                await asyncio.to_thread(_write_readable, checked, content)
            mounts = [
                *self._interpreter_mounts(),
                Mount(Path(sys.prefix)),
                Mount(build, writable=True),
                Mount(pip_cache, writable=True),
                *(Mount(path) for path in _pip_local_paths()),
            ]
            env = _pip_env(pip_cache)
            steps = [
                [self._base_python(), "-m", "venv", "--without-pip", str(build)],
                [
                    self._python,
                    "-m",
                    "pip",
                    "--python",
                    str(build / "bin" / "python"),
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--only-binary=:all:",
                    *_TEST_TOOLS,
                    *(["-r", str(checked)] if content else []),
                ],
            ]
            for step in steps:
                result = await self._sandbox.run(
                    step,
                    workspace,
                    network=True,
                    limits=self._install_limits,
                    env=env,
                    mounts=mounts,
                    writable_workspace=False,
                )
                if not result.ok:
                    return _install_error(result)
            await self._sandbox.reclaim(build)
            await asyncio.to_thread(_readable_by_all, build)
            await asyncio.to_thread(_publish, build, venv)
            return venv
        finally:
            await asyncio.to_thread(shutil.rmtree, build, True)

    def _base_python(self) -> str:
        """The interpreter behind this one's venv, which the test venvs are made from."""
        return os.path.realpath(self._python)

    def _interpreter_mounts(self) -> list[Mount]:
        """The base interpreter's prefix (`<prefix>/bin/python3.x`), which every venv links to."""
        return [Mount(Path(self._base_python()).parent.parent)]


def _make_build_dirs(venvs: Path, pip_cache: Path) -> Path:
    venvs.mkdir(parents=True, exist_ok=True, mode=0o755)
    pip_cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=venvs))
    build.chmod(0o755)
    return build


def _readable_by_all(root: Path) -> None:
    """The venv was written under the engineer's umask (077 in the stack): test runs, as the
    sandbox user, must read and execute it, and nobody but its owner may change it."""
    for directory, _, files in os.walk(root):
        Path(directory).chmod(0o755)
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)


def _write_readable(path: Path, content: bytes) -> None:
    """Root-owned and world-readable: the sandbox user reads it and cannot change it."""
    path.write_bytes(content)
    path.chmod(0o644)


def _publish(build: Path, venv: Path) -> None:
    """Move a finished venv to its cache key; losing a race to an identical build is fine."""
    try:
        build.rename(venv)
    except OSError:
        if not (venv / "bin" / "python").exists():
            raise


def check_requirements(text: str) -> str | None:
    """Why requirements.txt cannot be installed safely, or None when every line is a package.

    Only `name[extras] <specifier> ; <marker>` lines are accepted: options (`-r`, `-e`,
    `--index-url`, `--extra-index-url`, `-f`) could point pip at the platform's own services
    or at local source trees whose build code would run; URLs and paths likewise.
    """
    for number, raw in enumerate(text.replace("\\\n", "").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            return (
                f"line {number} ({line[:60]!r}): pip options are not accepted; list packages by "
                "name, they are installed as binary wheels from the package index"
            )
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            return f"line {number} ({line[:60]!r}) is not a package requirement: {error}"
        if requirement.url:
            return (
                f"line {number} ({line[:60]!r}): URLs and paths are not accepted; name a "
                "package from the package index"
            )
    return None


def _given(settings: EngineerSettings | None) -> EngineerSettings:
    assert settings is not None, "settings are read whenever an argument is left out"
    return settings


def _error(name: str, detail: str, output: str) -> TestReport:
    return TestReport(
        passed=0,
        failed=0,
        errors=1,
        failures=(FailedTest(name, detail),),
        output=_tail(output, _OUTPUT_TAIL_CHARS),
    )


def _install_error(result: SandboxResult) -> TestReport:
    detail = result.describe() if not result.exit_code else _tail(result.output, _DETAIL_CHARS)
    return _error("pip install -r requirements.txt", detail, result.output)


def _test_env(venv: Path, home: Path) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's private tmpfs
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(venv),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


def _pip_env(pip_cache: Path) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",  # noqa: S108 - the sandbox's private tmpfs
        "PIP_CACHE_DIR": str(pip_cache),
    }
    for name, value in os.environ.items():
        if name.startswith(_PIP_ENV_PREFIXES) and name != "PIP_CACHE_DIR":
            env[name] = value
    return env


def _pip_local_paths() -> list[Path]:
    """Local wheel directories, file:// indexes and constraint files pip is configured with."""
    values = [value for name, value in os.environ.items() if name.startswith(_PIP_ENV_PREFIXES)]
    for config in _PIP_CONFIG_FILES:
        if config.is_file():
            values.append(config.read_text(errors="replace"))
    found: set[Path] = set()
    for value in values:
        for match in _LOCAL_PATH.finditer(value):
            path = Path(match.group(1))
            if path.exists() and path.parts[1:2] not in (("usr",), ("etc",), ("proc",), ("dev",)):
                found.add(path)
    return sorted(found)


def _read_junit(path: Path, output: str) -> TestReport | None:
    """Parse the report the sandbox wrote, refusing anything but a regular file (no symlink)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        try:
            root = ET.parse(handle).getroot()  # noqa: S314 - size bounded by RLIMIT_FSIZE
        except ET.ParseError:
            return None
    return _parse_junit(root, output)


def _tail(text: str, chars: int) -> str:
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


def _parse_junit(root: ET.Element, output: str) -> TestReport:
    passed = failed = errors = skipped = 0
    failures: list[FailedTest] = []
    passed_tests: list[str] = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        outcome = next(
            (child for child in case if child.tag in ("failure", "error", "skipped")), None
        )
        if outcome is None:
            passed += 1
            passed_tests.append(name)
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
        passed=passed,
        failed=failed,
        errors=errors,
        skipped=skipped,
        failures=tuple(failures),
        output=_tail(output, _OUTPUT_TAIL_CHARS),
        passed_tests=tuple(passed_tests),
    )
