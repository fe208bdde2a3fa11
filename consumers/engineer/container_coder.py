"""The coding agent in a container (Docker SDK): isolation for model-written code.

The workspace is bind-mounted at /workspace and a small I/O directory (task in, result out)
at /agent-io. The model key is read from Vault just before the run and given to the container
as an environment variable through the engine API: it never appears in this process's argv,
logs or events, and the container's log output is scrubbed of it before anything quotes it.
While the container runs, the broker gets `in_progress` heartbeats; after a deadline the
container is killed. It is always removed, whatever happened.

The container's claim that tests pass is not trusted: the host re-runs the tests on the
workspace before the step may commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import structlog

from consumers.engineer.agent import AgentMode, AgentOutcome, CodingTask, Heartbeat
from consumers.engineer.agent_io import ContainerResult, ContainerTask, read_result, write_task
from consumers.engineer.test_runner import PytestRunner, TestReport
from infra.settings import LLMSettings

#: The container's environment variable holding the model key.
API_KEY_ENV = "ORCH_CODER_API_KEY"
DEFAULT_COMMAND = ("python", "-m", "consumers.engineer.container_entry", "/workspace", "/agent-io")
_LOG_TAIL_CHARS = 2000
_log = structlog.get_logger(__name__)

ApiKeyProvider = Callable[[], Awaitable[str]]
DockerFactory = Callable[[], docker.DockerClient]


class ContainerEngineError(RuntimeError):
    """The container engine failed (unreachable, image missing): retry later, not a code failure."""


class ContainerCoder:
    """`CodingAgent` that runs the coding loop in a short-lived container."""

    mode: AgentMode = "container"

    def __init__(
        self,
        *,
        docker_client: DockerFactory,
        image: str,
        api_key: ApiKeyProvider,
        settings: LLMSettings,
        runner: PytestRunner,
        command: Sequence[str] = DEFAULT_COMMAND,
        network_mode: str = "bridge",
        timeout_seconds: float = 1800.0,
        heartbeat_seconds: float = 10.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._docker = docker_client
        self._image = image
        self._api_key = api_key
        self._settings = settings
        self._runner = runner
        self._command = list(command)
        self._network_mode = network_mode
        self._timeout = timeout_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._extra_env = dict(extra_env or {})
        #: The last run's scrubbed log output, for the step's log and for tests.
        self.last_logs = ""

    async def run(self, task: CodingTask, heartbeat: Heartbeat) -> AgentOutcome:
        io_dir = task.workspace.parent / "agent-io"
        io_dir.mkdir(exist_ok=True)
        write_task(io_dir, ContainerTask(task.project_id, task.spec, task.max_iterations))
        key = await self._api_key()
        container = await asyncio.to_thread(self._start, task, io_dir, key)
        try:
            exit_code = await self._wait(container, heartbeat)
        finally:
            logs = await asyncio.to_thread(self._finish, container)
        self.last_logs = logs.replace(key, "***") if key else logs
        result = read_result(io_dir)
        if exit_code is None:
            return _failure(
                result, f"the coding container timed out after {self._timeout:.0f} s"
            )
        if result is None:
            return _failure(
                None,
                f"the coding container exited with status {exit_code} without a result: "
                f"{_tail(self.last_logs)}",
            )
        report = await self._runner.run(task.workspace)
        if report.ok:
            return AgentOutcome(
                passed=True, iterations=result.iterations, report=report,
                summary=result.summary or f"Implemented {task.spec.name}", usage=result.usage,
            )
        return AgentOutcome(
            passed=False, iterations=result.iterations, report=report, summary="",
            usage=result.usage,
            reason=result.reason
            or f"gave up after {result.iterations} iterations: {report.summary()}",
        )

    def _start(self, task: CodingTask, io_dir: Path, key: str) -> Any:
        client = self._docker()
        environment = {
            "ORCH_LLM__PROVIDER": self._settings.provider,
            "ORCH_LLM__BASE_URL": self._settings.base_url,
            "ORCH_LLM__MODEL": self._settings.model,
            "ORCH_LLM__PROMPT_COST_PER_1K": str(self._settings.prompt_cost_per_1k),
            "ORCH_LLM__COMPLETION_COST_PER_1K": str(self._settings.completion_cost_per_1k),
            **self._extra_env,
            API_KEY_ENV: key,
        }
        try:
            container = client.containers.create(
                self._image,
                self._command,
                environment=environment,
                volumes={
                    str(task.workspace): {"bind": "/workspace", "mode": "rw"},
                    str(io_dir): {"bind": "/agent-io", "mode": "rw"},
                },
                working_dir="/workspace",
                network_mode=self._network_mode,
                # Files the agent writes stay owned by us, so the checkout can be committed
                # and removed without root.
                user=f"{os.getuid()}:{os.getgid()}",
                labels={"orchestrator.project": task.project_id, "orchestrator.role": "coder"},
            )
        except docker.errors.DockerException as exc:
            raise ContainerEngineError(f"cannot create the coding container: {exc}") from exc
        try:
            container.start()
        except docker.errors.DockerException as exc:
            container.remove(force=True)
            raise ContainerEngineError(f"cannot start the coding container: {exc}") from exc
        return container

    async def _wait(self, container: Any, heartbeat: Heartbeat) -> int | None:
        """The exit code, or None when the deadline passed and the container was killed."""
        waiting = asyncio.ensure_future(asyncio.to_thread(container.wait))
        deadline = time.monotonic() + self._timeout
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


def _failure(result: ContainerResult | None, reason: str) -> AgentOutcome:
    """An outcome for a container that produced no usable result; its tokens still count."""
    return AgentOutcome(
        passed=False,
        iterations=result.iterations if result else 0,
        report=TestReport(passed=0, failed=0),
        summary="",
        usage=result.usage if result else (),
        reason=reason,
    )


def _kill_quietly(container: Any) -> None:
    # It may have exited on its own between the deadline check and the kill.
    with contextlib.suppress(docker.errors.APIError):
        container.kill()


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _LOG_TAIL_CHARS else "..." + text[-_LOG_TAIL_CHARS:]
