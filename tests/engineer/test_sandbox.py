"""The sandbox holds hostile generated code: real bubblewrap, real processes, real sockets.

Each hostile project below is what a model could write into a repository: tests that try to
read the platform's secrets, reach its services on loopback, write outside the workspace or
exhaust the host. They run through the same `PytestRunner` the engineer uses, and each test
here checks both sides: the attack failed (the secret is nowhere in the report, the socket saw
no connection, no file appeared) and the run ended with a clear outcome while the engineer and
the platform's processes kept running.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumers.engineer.sandbox import (
    Mount,
    SandboxLimits,
    SandboxUnavailable,
    build_sandbox,
)
from consumers.engineer.sandbox.bubblewrap import BubblewrapSandbox
from consumers.engineer.sandbox.seccomp_filter import REFUSED, SANDBOX_BUILDING
from consumers.engineer.sandbox.unsandboxed import Unsandboxed
from consumers.engineer.settings import EngineerSettings
from consumers.engineer.test_runner import PytestRunner, TestReport, check_requirements
from tests.engineer.conftest import SERVICE_FILES

ROOT = Path(__file__).resolve().parents[2]
SECRET = f"s.platform-secret-{uuid.uuid4().hex}"
#: Small limits so each bomb is cut off in seconds; a test venv needs far less.
TIGHT = SandboxLimits(
    cpu_seconds=60,
    memory_bytes=768 * 1024**2,
    processes=64,
    open_files=256,
    file_size_bytes=8 * 1024**2,
    output_bytes=256 * 1024,
    wall_seconds=60.0,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One venv cache for the module: the hostile projects share requirements, as real ones do."""
    return tmp_path_factory.mktemp("sandbox-cache")


def write_project(root: Path, files: Mapping[str, str]) -> Path:
    workspace = root / "repo"
    for path, content in {"requirements.txt": "pytest\n", **files}.items():
        target = workspace / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(content))
    subprocess.run(["git", "init", "--quiet", str(workspace)], check=True)
    return workspace


def failure_detail(report: TestReport, name: str) -> str:
    matches = [failure.detail for failure in report.failures if failure.name.endswith(name)]
    assert matches, f"{name} did not fail: {report.summary(limit=20)}"
    return matches[0]


class LoopbackListener:
    """A platform-like TCP service on the host's 127.0.0.1 that counts who connects."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> LoopbackListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@pytest.fixture
async def platform_process() -> AsyncIterator[int]:
    """A long-running 'platform' process holding a secret in its environment, like a consumer."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import time; time.sleep(600)",
        env={"PATH": "/usr/bin:/bin", "ORCH_VAULT__SECRET_ID": SECRET},
    )
    try:
        yield process.pid
    finally:
        process.kill()
        await process.wait()


@pytest.fixture
def secret_state_dir(tmp_path: Path) -> Path:
    """A state directory like the stack's: a 0600 file holding a token, in a 0700 directory."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "stack.json").write_text(f'{{"operator_token": "{SECRET}"}}')
    (state / "stack.json").chmod(0o600)
    return state


async def test_hostile_tests_cannot_reach_secrets_services_or_files_outside(
    tmp_path: Path,
    cache_dir: Path,
    platform_process: int,
    secret_state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_VAULT__TOKEN", SECRET)  # the engineer's own environment
    escape = Path("/tmp") / f"sandbox-escape-{uuid.uuid4().hex}"  # the host's /tmp
    async with LoopbackListener() as listener:
        workspace = write_project(
            tmp_path,
            {
                "tests/test_attacks.py": f"""
            import glob, os, socket

            # What an attacker knows: the platform's variable names and file layout, not values.
            SECRET = "ORCH_VAULT__"

            def test_engineer_environment() -> None:
                assert SECRET in str(dict(os.environ))

            def test_platform_process_environ() -> None:
                assert SECRET in open("/proc/{platform_process}/environ").read()

            def test_every_visible_environ() -> None:
                found = ""
                for path in glob.glob("/proc/*/environ"):
                    try:
                        found += open(path, errors="replace").read()
                    except OSError:
                        pass
                assert SECRET in found, sorted(glob.glob("/proc/*"))[:20]

            def test_pid_one_environ() -> None:
                assert SECRET in open("/proc/1/environ", errors="replace").read()

            def test_state_file() -> None:
                assert "operator_token" in open({str(secret_state_dir / "stack.json")!r}).read()

            def test_write_into_state_dir() -> None:
                open({str(secret_state_dir / "planted")!r}, "w").write("x")

            def test_write_private_tmp() -> None:
                open({str(escape)!r}, "w").write("lands in the sandbox's own tmpfs")

            def test_write_system() -> None:
                open("/usr/lib/sandbox-planted", "w").write("x")

            def test_root_home() -> None:
                assert set(os.listdir("/root")) - {{".pyenv"}}

            def test_git_hook() -> None:
                open(".git/hooks/pre-commit", "w").write("#!/bin/sh\\nid > /tmp/pwned\\n")

            def test_platform_port() -> None:
                socket.create_connection(("127.0.0.1", {listener.port}), timeout=5).close()

            def test_runs_unprivileged() -> None:
                assert os.getuid() == 0

            def test_workspace_is_writable() -> None:
                open("scratch.txt", "w").write("tests may write their workspace")
        """
            },
        )

        runner = PytestRunner(sandbox=BubblewrapSandbox(), limits=TIGHT, cache_dir=cache_dir)
        report = await runner.run(workspace)

    assert (report.passed, report.failed, report.errors) == (2, 11, 0), report.summary(limit=20)
    assert SECRET not in report.output
    assert all(SECRET not in failure.detail for failure in report.failures)
    assert "PermissionError" in failure_detail(report, "test_platform_process_environ") or (
        "FileNotFoundError" in failure_detail(report, "test_platform_process_environ")
    )
    assert "FileNotFoundError" in failure_detail(report, "test_state_file")
    assert "Read-only file system" in failure_detail(report, "test_write_system")
    assert "Read-only file system" in failure_detail(report, "test_git_hook")
    assert "ConnectionRefusedError" in failure_detail(report, "test_platform_port")
    assert listener.connections == 0
    assert not escape.exists()
    assert not (secret_state_dir / "planted").exists()
    assert not Path("/usr/lib/sandbox-planted").exists()
    assert not (workspace / ".git" / "hooks" / "pre-commit").exists()
    # The workspace's files are the engineer's again, so its git can commit them.
    assert (workspace / "scratch.txt").stat().st_uid == os.getuid()
    os.kill(platform_process, 0)  # the platform's process is still alive


async def test_the_kernel_interfaces_the_filter_lists_are_refused_and_the_rest_works(
    tmp_path: Path, cache_dir: Path
) -> None:
    """Each test passes only where the seccomp filter holds: without it, `perf_event_open`
    answers EFAULT (its NULL attribute is read first) and a user namespace of the code's own
    is allowed on this kernel. Threads and processes, which every test suite uses, still run."""
    workspace = write_project(
        tmp_path,
        {
            "tests/test_syscalls.py": """
            import ctypes, errno, os, platform, subprocess, threading

            libc = ctypes.CDLL(None, use_errno=True)
            NUMBERS = {"x86_64": {"perf_event_open": 298}, "aarch64": {"perf_event_open": 241}}
            CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000

            def refused(result: int) -> int:
                return ctypes.get_errno() if result == -1 else 0

            def test_perf_event_open() -> None:
                number = NUMBERS[platform.machine()]["perf_event_open"]
                assert refused(libc.syscall(number, None, 0, -1, -1, 0)) == errno.EPERM

            def test_a_user_namespace_of_its_own() -> None:
                assert refused(libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)) == errno.EPERM

            def test_mount() -> None:
                assert refused(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)) == errno.EPERM

            def test_threads_and_processes_still_run() -> None:
                seen = []
                thread = threading.Thread(target=lambda: seen.append(os.getpid()))
                thread.start()
                thread.join()
                assert seen == [os.getpid()]
                assert subprocess.run(["/usr/bin/true"]).returncode == 0
            """
        },
    )
    runner = PytestRunner(sandbox=BubblewrapSandbox(), limits=TIGHT, cache_dir=cache_dir)
    report = await runner.run(workspace)
    assert (report.passed, report.failed, report.errors) == (4, 0, 0), report.summary(limit=20)


def test_the_compose_engineer_refuses_what_the_sandbox_refuses_but_namespaces() -> None:
    """One list, two filters: the compose engineer's must allow what bubblewrap builds with."""
    profile = json.loads((ROOT / "infra" / "docker" / "engineer-seccomp.json").read_text())
    compose = {name for rule in profile["syscalls"] for name in rule["names"]}
    assert compose == set(REFUSED) - set(SANDBOX_BUILDING)


async def test_a_fork_bomb_is_bounded_and_leaves_nothing_behind(
    tmp_path: Path, cache_dir: Path
) -> None:
    workspace = write_project(
        tmp_path,
        {
            "tests/test_bomb.py": """
        import os

        def test_fork_bomb() -> None:
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
    """
        },
    )
    limits = SandboxLimits(**{**TIGHT.__dict__, "wall_seconds": 20.0})
    runner = PytestRunner(sandbox=BubblewrapSandbox(), limits=limits, cache_dir=cache_dir)

    started = time.monotonic()
    report = await runner.run(workspace)

    assert time.monotonic() - started < 60
    assert not report.ok
    assert "killed after 20 s" in report.summary(), report.summary()
    assert sandbox_processes(workspace) == []
    # The host can still start processes: the bomb only ever had the sandbox user's quota.
    assert subprocess.run(["true"], check=False).returncode == 0


async def test_unbounded_memory_and_output_end_the_run_with_a_reason(
    tmp_path: Path, cache_dir: Path
) -> None:
    workspace = write_project(
        tmp_path,
        {
            "tests/test_greedy.py": """
        import sys

        def test_memory() -> None:
            hoard = []
            while True:
                hoard.append(bytearray(32 * 1024 * 1024))

        def test_output() -> None:
            while True:
                sys.__stdout__.write("x" * 65536)
    """
        },
    )
    runner = PytestRunner(sandbox=BubblewrapSandbox(), limits=TIGHT, cache_dir=cache_dir)

    report = await runner.run(workspace)

    assert not report.ok
    summary = report.summary()
    # pytest captures output into a file in the sandbox's /tmp; the file size limit ends it.
    assert "file size limit" in summary or "output limit" in summary, summary
    assert len(report.output) <= TIGHT.output_bytes


async def test_a_test_that_passes_after_memory_error_reports_the_memory_error(
    tmp_path: Path, cache_dir: Path
) -> None:
    workspace = write_project(
        tmp_path,
        {
            "tests/test_memory.py": """
        def test_memory() -> None:
            hoard = []
            while True:
                hoard.append(bytearray(32 * 1024 * 1024))

        def test_still_runs() -> None:
            assert True
    """
        },
    )
    runner = PytestRunner(sandbox=BubblewrapSandbox(), limits=TIGHT, cache_dir=cache_dir)

    report = await runner.run(workspace)

    assert (report.passed, report.failed) == (1, 1), report.summary()
    assert "MemoryError" in failure_detail(report, "test_memory")


async def test_output_beyond_the_cap_kills_the_run(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    sandbox = BubblewrapSandbox()
    python = Path(os.path.realpath(sys.executable))

    result = await sandbox.run(
        [str(python), "-c", "while True: print('x' * 1000, flush=True)"],
        workspace,
        network=False,
        limits=TIGHT,
        env={"PATH": "/usr/bin"},
        mounts=[Mount(python.parent.parent)],
    )

    assert result.output_exceeded and not result.ok
    assert len(result.output.encode()) <= TIGHT.output_bytes
    assert "output limit" in result.describe()
    assert sandbox_processes(workspace) == []


async def test_requirements_cannot_point_pip_at_the_platform(
    tmp_path: Path, cache_dir: Path
) -> None:
    async with LoopbackListener() as listener:
        workspace = write_project(
            tmp_path,
            {
                "requirements.txt": f"--extra-index-url http://127.0.0.1:{listener.port}/simple\n"
                "pytest\n",
            },
        )
        runner = PytestRunner(sandbox=BubblewrapSandbox(), limits=TIGHT, cache_dir=cache_dir)
        report = await runner.run(workspace)

    assert not report.ok
    assert "pip options are not accepted" in report.summary()
    assert listener.connections == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("-e .", "pip options are not accepted"),
        ("-r other.txt", "pip options are not accepted"),
        ("evil @ file:///etc", "URLs and paths are not accepted"),
        ("pkg @ git+https://example.invalid/x.git", "URLs and paths are not accepted"),
        ("./local-dir", "is not a package requirement"),
    ],
)
def test_requirement_lines_other_than_package_names_are_refused(line: str, reason: str) -> None:
    assert reason in (check_requirements(f"fastapi\n{line}\n") or "")


def test_package_requirements_are_accepted() -> None:
    text = "# comment\nfastapi>=0.100  # web\nhttpx[http2]==0.28.1\npytest ; python_version > '3'\n"
    assert check_requirements(text) is None


async def test_the_service_scaffold_passes_in_the_sandbox_and_what_it_costs(
    tmp_path: Path, cache_dir: Path
) -> None:
    """The offline http template through the sandbox, and the same run without it, timed."""
    workspace = write_project(tmp_path, SERVICE_FILES)
    sandboxed = PytestRunner(
        sandbox=BubblewrapSandbox(), limits=SandboxLimits(), cache_dir=cache_dir
    )
    bare = PytestRunner(sandbox=Unsandboxed(), limits=SandboxLimits(), cache_dir=cache_dir)

    first = await sandboxed.run(workspace)  # installs (or finds) the cached venv
    assert first.ok and first.passed == 2, first.summary()
    timings: dict[str, list[float]] = {"bubblewrap": [], "none": []}
    for _ in range(2):
        for name, runner in (("bubblewrap", sandboxed), ("none", bare)):
            started = time.monotonic()
            report = await runner.run(workspace)
            timings[name].append(time.monotonic() - started)
            assert report.ok and report.passed == 2, report.summary()
    best = {name: min(values) for name, values in timings.items()}
    print(
        f"scaffold test run, best of 2: sandboxed {best['bubblewrap']:.2f} s, "
        f"unsandboxed {best['none']:.2f} s"
    )
    # The cached venv is the engineer's and shared read-only: no run can change it.
    venvs = [path for path in (cache_dir / "venvs").iterdir() if not path.name.startswith(".")]
    assert all(venv.stat().st_uid == os.getuid() for venv in venvs)


async def test_a_repeated_run_reuses_the_venv_without_installing(
    tmp_path: Path, cache_dir: Path
) -> None:
    workspace = write_project(tmp_path, {"tests/test_ok.py": "def test_ok() -> None:\n    pass\n"})
    runner = PytestRunner(sandbox=BubblewrapSandbox(), limits=TIGHT, cache_dir=cache_dir)
    assert (await runner.run(workspace)).ok
    venvs = {path.name for path in (cache_dir / "venvs").iterdir()}

    (workspace / "tests" / "test_more.py").write_text("def test_more() -> None:\n    pass\n")
    report = await runner.run(workspace)

    assert report.ok and report.passed == 2
    assert {path.name for path in (cache_dir / "venvs").iterdir()} == venvs


async def test_a_private_checkout_installs_into_a_fresh_cache(tmp_path: Path) -> None:
    """The stack runs with umask 077, so the engineer's checkout is 0600/0700 and the sandbox
    user cannot read it; the install must still work, from the requirements it checked."""
    runner = PytestRunner(
        sandbox=BubblewrapSandbox(), limits=TIGHT, cache_dir=tmp_path / "fresh-cache"
    )
    previous = os.umask(0o077)
    try:
        workspace = write_project(
            tmp_path, {"tests/test_ok.py": "def test_ok() -> None:\n    pass\n"}
        )
        assert (workspace / "requirements.txt").stat().st_mode & 0o077 == 0
        # The venv is built under the same umask, as the stack's engineer builds it.
        report = await runner.run(workspace)
    finally:
        os.umask(previous)
    assert report.ok and report.passed == 1, report.summary(limit=5)


def test_no_sandbox_must_be_confirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_ENGINEER_SANDBOX", "none")
    with pytest.raises(ValidationError, match="ORCH_ENGINEER_ALLOW_UNSANDBOXED"):
        EngineerSettings()
    monkeypatch.setenv("ORCH_ENGINEER_ALLOW_UNSANDBOXED", "true")
    assert build_sandbox(EngineerSettings()).name == "unsandboxed"
    monkeypatch.delenv("ORCH_ENGINEER_SANDBOX")
    assert build_sandbox(EngineerSettings()).name == "bubblewrap"


async def test_a_missing_bwrap_is_a_clear_error(tmp_path: Path) -> None:
    sandbox = BubblewrapSandbox(bwrap=str(tmp_path / "no-such-bwrap"))
    with pytest.raises(SandboxUnavailable, match="bubblewrap cannot create a sandbox"):
        await sandbox.run(["true"], tmp_path, network=False, limits=TIGHT, env={})


def sandbox_processes(within: Path) -> list[int]:
    """Processes of the sandbox user still working in `within` (as root): a finished run leaves
    none. Scoped to the run's own directory, because other sandbox runs on the same host (a
    stack's engineer, another test session) are not this run's leftovers."""
    if os.geteuid() != 0:
        return []
    uid = pwd.getpwnam("orch-sandbox").pw_uid
    alive = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and os.readlink(f"/proc/{entry.name}/cwd").startswith(
                    str(within)
                ):
                    alive.append(int(entry.name))
            except OSError:
                continue
    return alive


def test_loopback_is_really_listening_on_the_host() -> None:
    """Guards the port test above: the same connect from the host itself succeeds."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        socket.create_connection(server.getsockname(), timeout=5).close()
    finally:
        server.close()


async def test_the_app_is_started_as_the_deployer_would_and_its_health_asked(
    tmp_path: Path, cache_dir: Path
) -> None:
    """`check_app`: deploy.json's start command in the sandbox, GET /health, and what it costs."""
    workspace = write_project(tmp_path, SERVICE_FILES)
    runner = PytestRunner(sandbox=BubblewrapSandbox(), limits=SandboxLimits(), cache_dir=cache_dir)
    assert (await runner.run(workspace)).ok  # installs (or finds) the cached venv
    started = time.monotonic()
    assert await runner.check_app(workspace) == ""
    print(f"app start and GET /health in the sandbox: {time.monotonic() - started:.2f} s")

    (workspace / "app" / "__main__.py").write_text("import sys\n\nsys.exit('no server today')\n")
    problem = await runner.check_app(workspace)
    assert problem.startswith("the app does not start the way the deployer starts it"), problem
    assert "`python -m app` exited with status 1 before GET /health answered" in problem
    assert "no server today" in problem

    # A module the model wrote beside deploy.json cannot stand in for the probe's own imports.
    (workspace / "json.py").write_text("import os\n\nprint('healthy')\nos._exit(0)\n")
    assert "no server today" in await runner.check_app(workspace)
