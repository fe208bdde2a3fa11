"""The coding agent in a container (Docker SDK): model-written code never runs on the host.

Per run the host starts the metering proxy (`llm_proxy/`) on a UNIX socket in a private
directory, writes the run's one-time token beside it, and starts the coding container with:

- `network_mode="none"`: the socket, bind-mounted at /run/llm-proxy, is its only way out;
- no capabilities (`cap_drop=ALL`), `no-new-privileges`, an unprivileged uid, a read-only
  root file system with a tmpfs /tmp, and memory, CPU and process-count limits;
- the checkout at /workspace (rw) and a task/result directory at /agent-io (rw);
- no secret in its environment or configuration: only the LLM settings without the key
  (`docker inspect` shows nothing the provider would accept).

The model's `run_tests` tool calls back over the socket; the host runs the suite in a second
container with the same limits, the workspace read-only and also no network, and hands back
the counts. Everything the coding container says (its result file, its test runs) is the
model's word, so the host decides on its own measurements, taken the same way (fresh test
containers), and never runs the model's code itself:
- before the coding container starts, the host hashes the workspace (`coder/guard.py`) and
  runs its tests once for its own baseline;
- after it, the host runs the tests again and applies LLM mode's rule to the pair
  (`guard.tests_problem`): green, no fewer tests passing than existed before, every
  acceptance test among them by name; then the hashes: protected files unchanged, something
  changed at all;
- then it starts the app the way the deployer does and asks its health endpoint, in a third
  kind of container (`app_in_container`: `app_probe.py` run by the image's interpreter, the
  workspace read-only, no network, the same limits).
A result that claims success fails on any of these with the host's reason; a failure the
agent reports fails the run even when the host's checks pass.

When the task carries the project's memory, `search_memory` calls back over the socket too
(`MEMORY_ROUTE`, `memory_route`): the host searches its own `ProjectMemory`, whose owner and
project were fixed on the host, so the container sends words and never a scope.

While the containers run, the broker gets `in_progress` heartbeats; past a deadline a
container is killed. Containers are always removed. A refusal by the proxy (budget or time
spent) fails the task with the proxy's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import structlog

from consumers.engineer.agent import AgentMode, AgentOutcome, CodingTask, Heartbeat
from consumers.engineer.agent_io import (
    MEMORY_ROUTE,
    PROXY_DIR,
    TESTS_ROUTE,
    TOKEN_FILE,
    ContainerResult,
    ContainerTask,
    hits_to_json,
    memory_query_from_json,
    read_report,
    read_result,
    report_to_json,
    write_task,
)
from consumers.engineer.app_probe import NOT_STARTED
from consumers.engineer.coder.guard import WorkspaceGuard, tests_problem
from consumers.engineer.coder.memory_tool import ProjectSearch
from consumers.engineer.llm_proxy.ledger import Ledger
from consumers.engineer.llm_proxy.run import ProxyLauncher
from consumers.engineer.llm_proxy.server import HostRoute, HostRouteError
from consumers.engineer.test_runner import APP_START_SECONDS, FailedTest, TestReport
from infra.settings import LLMSettings

DEFAULT_COMMAND = ("python", "-m", "consumers.engineer.container_entry", "/workspace", "/agent-io")
DEFAULT_TEST_COMMAND = (
    "python",
    "-m",
    "consumers.engineer.container_tests",
    "/workspace",
    "/results",
)
#: The app check: the image's copy of `app_probe.py` (infra/docker/coder.Dockerfile puts the
#: agent's code at /opt/orchestrator), isolated (`-I`) from anything in the workspace.
DEFAULT_APP_COMMAND = (
    "python",
    "-I",
    "/opt/orchestrator/consumers/engineer/app_probe.py",
    "/workspace",
    "/tmp/app-data",  # noqa: S108 - the container's private tmpfs
    f"{APP_START_SECONDS:g}",
)
#: The uid:gid containers run as when the engineer itself runs as root (`nobody`).
UNPRIVILEGED_USER = (65534, 65534)
_LOG_TAIL_CHARS = 2000
_log = structlog.get_logger(__name__)

DockerFactory = Callable[[], docker.DockerClient]
LedgerFactory = Callable[[CodingTask], Ledger]


class ContainerEngineError(RuntimeError):
    """The container engine failed (unreachable, image missing): retry later, not a code failure."""


@dataclass(frozen=True)
class ContainerLimits:
    """Resource bounds of every coding and test container."""

    memory: str = "2g"
    cpus: float = 1.0
    pids: int = 256
    tmp_size: str = "512m"


class ContainerCoder:
    """`CodingAgent` that runs the coding loop, and every test run, in short-lived containers."""

    mode: AgentMode = "container"

    def __init__(
        self,
        *,
        docker_client: DockerFactory,
        image: str,
        proxy: ProxyLauncher,
        ledger: LedgerFactory,
        settings: LLMSettings,
        command: Sequence[str] = DEFAULT_COMMAND,
        test_command: Sequence[str] = DEFAULT_TEST_COMMAND,
        app_command: Sequence[str] = DEFAULT_APP_COMMAND,
        limits: ContainerLimits | None = None,
        timeout_seconds: float = 1800.0,
        test_timeout_seconds: float = 600.0,
        heartbeat_seconds: float = 10.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._docker = docker_client
        self._image = image
        self._proxy = proxy
        self._ledger = ledger
        self._settings = settings
        self._command = list(command)
        self._test_command = list(test_command)
        self._app_command = list(app_command)
        self._limits = limits or ContainerLimits()
        self._timeout = timeout_seconds
        self._test_timeout = test_timeout_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._extra_env = dict(extra_env or {})
        uid = os.getuid()
        self._user = UNPRIVILEGED_USER if uid == 0 else (uid, os.getgid())
        #: The last run's log output (coding container), for the step's log and for tests.
        self.last_logs = ""

    async def run(self, task: CodingTask, heartbeat: Heartbeat) -> AgentOutcome:
        io_dir = task.workspace.parent / "agent-io"
        io_dir.mkdir(exist_ok=True)
        write_task(
            io_dir,
            ContainerTask(
                task.project_id,
                task.spec,
                task.max_iterations,
                task.change,
                memory=task.memory is not None,
            ),
        )
        # Short, private path: a UNIX socket path must stay under 108 bytes.
        proxy_dir = Path(tempfile.mkdtemp(prefix="llm-proxy-"))

        async def tests_route(_body: Mapping[str, Any]) -> Mapping[str, Any]:
            return report_to_json(await self.test_in_container(task.workspace, heartbeat))

        routes: dict[str, HostRoute] = {TESTS_ROUTE: tests_route}
        if task.memory is not None:
            routes[MEMORY_ROUTE] = memory_route(task.memory)
        guard = WorkspaceGuard(task.workspace)
        try:
            # Every container runs as the containers' uid; the checkout stays handed over
            # until the host's own checks after the run are done.
            await asyncio.to_thread(self._hand_over, task.workspace, io_dir)
            baseline = await self.test_in_container(task.workspace, heartbeat)
            async with self._proxy.on_socket(proxy_dir, self._ledger(task), routes) as proxied:
                (proxy_dir / TOKEN_FILE).write_text(proxied.token)
                await asyncio.to_thread(self._hand_over_token, proxy_dir)
                exit_code, self.last_logs = await self._run_container(
                    self._command,
                    self._coder_mounts(task.workspace, io_dir, proxy_dir),
                    heartbeat,
                    self._timeout,
                    task.project_id,
                    "coder",
                )
                refused = proxied.proxy.refused
            try:
                result, unusable = read_result(io_dir), ""
            except ValueError as exc:
                result, unusable = None, f"its result file is unusable ({exc})"
            if refused is not None:
                return _failure(result, refused)
            if exit_code is None:
                return _failure(
                    result, f"the coding container timed out after {self._timeout:.0f} s"
                )
            if result is None:
                return _failure(
                    None,
                    f"the coding container exited with status {exit_code} without a result: "
                    f"{unusable or _tail(self.last_logs)}",
                )
            return await self._verify(task, result, baseline, guard, heartbeat)
        finally:
            await asyncio.to_thread(self._take_back, task.workspace, io_dir)
            shutil.rmtree(proxy_dir, ignore_errors=True)

    async def _verify(
        self,
        task: CodingTask,
        result: ContainerResult,
        baseline: TestReport,
        guard: WorkspaceGuard,
        heartbeat: Heartbeat,
    ) -> AgentOutcome:
        """The host's verdict on its own measurements; the container's claim only adds a
        failure, never a pass."""
        report = await self.test_in_container(task.workspace, heartbeat)
        problem = tests_problem(report, baseline) or guard.problem()
        if not problem and not result.reason:
            problem = await self.app_in_container(task.workspace, heartbeat)
        if not problem and not result.reason:
            return AgentOutcome(
                passed=True,
                iterations=result.iterations,
                report=report,
                summary=result.summary or f"Implemented {task.spec.name}",
            )
        if result.reason:
            reason = result.reason
        else:
            reason = (
                f"the coding container reported success after {result.iterations} iterations, "
                f"but the engineer's own check disagrees: {problem}"
            )
        return AgentOutcome(
            passed=False,
            iterations=result.iterations,
            report=report,
            summary="",
            reason=reason,
        )

    async def test_in_container(self, workspace: Path, heartbeat: Heartbeat) -> TestReport:
        """Run the workspace's tests in a fresh container (no network, workspace read-only)."""
        results = Path(tempfile.mkdtemp(prefix="test-results-"))
        try:
            await asyncio.to_thread(_chown_tree, results, self._user)
            mounts = {
                str(workspace): {"bind": "/workspace", "mode": "ro"},
                str(results): {"bind": "/results", "mode": "rw"},
            }
            exit_code, logs = await self._run_container(
                self._test_command, mounts, heartbeat, self._test_timeout, "", "tests"
            )
            report = read_report(results)
        finally:
            shutil.rmtree(results, ignore_errors=True)
        if report is not None:
            return report
        detail = (
            f"timed out after {self._test_timeout:.0f} s"
            if exit_code is None
            else f"the test container exited with status {exit_code} without a report"
        )
        return TestReport(
            passed=0,
            failed=0,
            errors=1,
            failures=(FailedTest("pytest", detail),),
            output=_tail(logs),
        )

    async def app_in_container(self, workspace: Path, heartbeat: Heartbeat) -> str:
        """ "" when the app, started as the deployer starts it in a fresh container (no
        network, workspace read-only, the test containers' limits), answers its health
        endpoint; otherwise why not, with the tail of what the app printed."""
        mounts = {str(workspace): {"bind": "/workspace", "mode": "ro"}}
        exit_code, logs = await self._run_container(
            self._app_command, mounts, heartbeat, self._test_timeout, "", "app"
        )
        if exit_code == 0:
            return ""
        if exit_code is None:
            detail = f"the app check timed out after {self._test_timeout:.0f} s"
        elif exit_code == 1:  # the probe's verdict: the app crashed or did not answer
            detail = _tail(logs)
        else:
            detail = f"the app check exited with status {exit_code}: {_tail(logs)}"
        return f"{NOT_STARTED}: {detail}"

    def _coder_mounts(
        self, workspace: Path, io_dir: Path, proxy_dir: Path
    ) -> dict[str, dict[str, str]]:
        return {
            str(workspace): {"bind": "/workspace", "mode": "rw"},
            str(io_dir): {"bind": "/agent-io", "mode": "rw"},
            str(proxy_dir): {"bind": PROXY_DIR, "mode": "ro"},
        }

    def _hand_over(self, workspace: Path, io_dir: Path) -> None:
        """Let the containers' uid read and (the coding container) write the checkout."""
        for path in (workspace, io_dir):
            _chown_tree(path, self._user)

    def _hand_over_token(self, proxy_dir: Path) -> None:
        """Let the coding container's uid read the token (only it and us)."""
        token = proxy_dir / TOKEN_FILE
        _chown_tree(token, self._user)
        token.chmod(0o400)
        proxy_dir.chmod(0o755)

    def _take_back(self, workspace: Path, io_dir: Path) -> None:
        """Give the checkout back to the engineer's uid so it can commit and remove it."""
        if os.getuid() == 0:
            for path in (workspace, io_dir):
                _chown_tree(path, (0, 0))

    async def _run_container(
        self,
        command: Sequence[str],
        mounts: Mapping[str, Mapping[str, str]],
        heartbeat: Heartbeat,
        limit_seconds: float,
        project_id: str,
        role: str,
    ) -> tuple[int | None, str]:
        container = await asyncio.to_thread(self._start, command, mounts, project_id, role)
        try:
            exit_code = await self._wait(container, heartbeat, limit_seconds)
        finally:
            logs = await asyncio.to_thread(self._finish, container)
        return exit_code, logs

    def _start(
        self,
        command: Sequence[str],
        mounts: Mapping[str, Mapping[str, str]],
        project_id: str,
        role: str,
    ) -> Any:
        client = self._docker()
        environment = {
            "ORCH_LLM__PROVIDER": self._settings.provider,
            "ORCH_LLM__MODEL": self._settings.model,
            "ORCH_LLM__PROMPT_COST_PER_1K": str(self._settings.prompt_cost_per_1k),
            "ORCH_LLM__COMPLETION_COST_PER_1K": str(self._settings.completion_cost_per_1k),
            **self._extra_env,
        }
        limits = self._limits
        try:
            container = client.containers.create(
                self._image,
                list(command),
                environment=environment,
                volumes={path: dict(bind) for path, bind in mounts.items()},
                working_dir="/workspace",
                network_mode="none",
                user=f"{self._user[0]}:{self._user[1]}",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmp_size}"},  # noqa: S108
                mem_limit=limits.memory,
                memswap_limit=limits.memory,
                nano_cpus=int(limits.cpus * 1e9),
                pids_limit=limits.pids,
                labels={"orchestrator.project": project_id, "orchestrator.role": role},
            )
        except docker.errors.DockerException as exc:
            raise ContainerEngineError(f"cannot create the {role} container: {exc}") from exc
        try:
            container.start()
        except docker.errors.DockerException as exc:
            container.remove(force=True)
            raise ContainerEngineError(f"cannot start the {role} container: {exc}") from exc
        return container

    async def _wait(self, container: Any, heartbeat: Heartbeat, limit_seconds: float) -> int | None:
        """The exit code, or None when the deadline passed and the container was killed."""
        waiting = asyncio.ensure_future(asyncio.to_thread(container.wait))
        deadline = time.monotonic() + limit_seconds
        try:
            while True:
                left = deadline - time.monotonic()
                done, _ = await asyncio.wait({waiting}, timeout=min(self._heartbeat_seconds, left))
                if done:
                    return int(waiting.result()["StatusCode"])
                if time.monotonic() >= deadline:
                    await asyncio.to_thread(_kill_quietly, container)
                    await waiting
                    return None
                try:
                    await heartbeat()
                except Exception as exc:
                    _log.warning("engineer.heartbeat_failed", error=str(exc))
        finally:
            if not waiting.done():
                await asyncio.to_thread(_kill_quietly, container)
                await asyncio.wait({waiting})

    @staticmethod
    def _finish(container: Any) -> str:
        try:
            return str(container.logs(stdout=True, stderr=True).decode(errors="replace"))
        finally:
            container.remove(force=True)


def memory_route(memory: ProjectSearch) -> HostRoute:
    """The host side of the container's `search_memory`: `{"query": str}` in, hits out.

    Only the query is read from the body; the scope is `memory`'s (the task's `ProjectMemory`,
    fixed by the host), so a body naming another user or project changes nothing. A memory
    that is down or slow is a 503 the container's tool turns into its error text, never the
    run's failure.
    """

    async def search(body: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            query = memory_query_from_json(body)
        except ValueError as exc:
            raise HostRouteError(400, str(exc)) from exc
        try:
            hits = await memory.search(query)
        except Exception as exc:
            _log.warning("engineer.memory_unavailable", error=type(exc).__name__)
            raise HostRouteError(
                503, f"project memory is unavailable right now ({type(exc).__name__})"
            ) from exc
        return hits_to_json(hits)

    return search


def _chown_tree(root: Path, owner: tuple[int, int]) -> None:
    """Hand a tree to `owner` (only possible, and only needed, when we are root)."""
    if os.getuid() != 0:
        return
    os.chown(root, *owner)
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(os.path.join(directory, name), *owner, follow_symlinks=False)


def _failure(result: ContainerResult | None, reason: str) -> AgentOutcome:
    """An outcome for a container that produced no usable result."""
    return AgentOutcome(
        passed=False,
        iterations=result.iterations if result else 0,
        report=TestReport(passed=0, failed=0),
        summary="",
        reason=reason,
    )


def _kill_quietly(container: Any) -> None:
    # It may have exited on its own between the deadline check and the kill.
    with contextlib.suppress(docker.errors.APIError):
        container.kill()


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _LOG_TAIL_CHARS else "..." + text[-_LOG_TAIL_CHARS:]
