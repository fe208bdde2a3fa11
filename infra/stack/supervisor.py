"""Keeps the stack's consumer processes running, and takes them all down with it.

A consumer exits on purpose when its broker connection is gone (see DESIGN.md), so restarting
is the normal way it recovers. Restarts back off exponentially so a process that cannot start
does not spin; the delay resets once a process has stayed up long enough to count as healthy.
Each child leads its own process group and gets PDEATHSIG, so neither a stopped nor a killed
supervisor leaves one behind.

A child whose spec names a `module` is forked from the supervisor's zygote when it has one
(infra/stack/zygote.py: the shared imports paid once, their pages shared); any other child, or
every child of a supervisor without a zygote, is started from its `argv` with a fresh
interpreter. Either way it gets the same environment, session, log and restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import structlog

from infra.stack.process import child_environment, parent_death_preexec, signal_group
from infra.stack.zygote_client import Zygote

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ChildSpec:
    """A process to keep running: its name, argv and its variables beyond the allowlisted ones.

    `before_start` runs before every (re)start: the launcher uses it to mint the child a fresh
    Vault secret id and write it to the child's credentials file, so a restart never reuses one.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    before_start: Callable[[], None] | None = None
    #: Run as `python -m module` forked from the supervisor's zygote, if it has one; `argv`
    #: is then what runs without a zygote. None for what must start from `argv` (a program
    #: that is not Python, or one that needs a fresh interpreter).
    module: str | None = None


class ChildProcess(Protocol):
    """A running child as the supervisor handles it: exec'd (asyncio's) or forked (a zygote's)."""

    @property
    def pid(self) -> int: ...

    async def wait(self) -> int | None: ...

    def send_signal(self, sig: int, /) -> None: ...

    def kill(self) -> None: ...


@dataclass
class _Child:
    spec: ChildSpec
    task: asyncio.Task[None] | None = None
    process: ChildProcess | None = None
    running: bool = False
    restarts: int = 0


class Supervisor:
    """Starts children, restarts any that exits while the supervisor runs, stops them all."""

    def __init__(
        self,
        log_dir: Path,
        *,
        grace_period: float = 10.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        healthy_after: float = 60.0,
        zygote: Zygote | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.grace_period = grace_period
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self._children: dict[str, _Child] = {}
        self._stopping = False
        self._zygote = zygote

    def start(self, spec: ChildSpec) -> None:
        """Start keeping `spec` running (call from the event loop's thread, see PDEATHSIG)."""
        if spec.name in self._children:
            raise ValueError(f"a child named {spec.name!r} is already supervised")
        if self._stopping:
            raise RuntimeError("the supervisor is stopping")
        child = _Child(spec)
        self._children[spec.name] = child
        child.task = asyncio.get_running_loop().create_task(
            self._keep_running(child), name=f"supervise-{spec.name}"
        )

    def pid_of(self, name: str) -> int | None:
        """The current process id of child `name`, if it is running."""
        child = self._children[name]
        if child.process is None or not child.running:
            return None
        return child.process.pid

    @property
    def zygote_pid(self) -> int | None:
        """The zygote's process id while it serves (None without one, or before first use)."""
        return self._zygote.pid if self._zygote is not None else None

    def restarts_of(self, name: str) -> int:
        """How many times child `name` has been restarted."""
        return self._children[name].restarts

    def log_path(self, name: str) -> Path:
        """Where child `name` writes its stdout and stderr."""
        return self.log_dir / f"{name}.log"

    async def _spawn(self, spec: ChildSpec) -> ChildProcess:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if spec.before_start is not None:
            spec.before_start()
        if spec.module is not None and self._zygote is not None:
            return await self._zygote.spawn(
                spec.name,
                spec.module,
                child_environment(spec.env),
                spec.cwd,
                self.log_path(spec.name),
            )
        # A log may quote what a process was handed, so only its owner reads it.
        descriptor = os.open(
            self.log_path(spec.name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        with os.fdopen(descriptor, "ab") as log:
            return await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=child_environment(spec.env),
                cwd=spec.cwd,
                start_new_session=True,
                preexec_fn=parent_death_preexec(),
            )

    async def _keep_running(self, child: _Child) -> None:
        delay = self.initial_backoff
        while not self._stopping:
            started = time.monotonic()
            try:
                child.process = await self._spawn(child.spec)
                child.running = True
            # A child whose preparation fails (Vault briefly unreachable while minting its secret
            # id) is retried with the same backoff as one that exits.
            except Exception as error:
                _log.error("child could not be started", child=child.spec.name, error=str(error))
                code: int | None = None
            else:
                _log.info("child started", child=child.spec.name, pid=child.process.pid)
                code = await child.process.wait()
                child.running = False
            if self._stopping:
                return
            if time.monotonic() - started >= self.healthy_after:
                delay = self.initial_backoff
            _log.warning(
                "child exited; restarting",
                child=child.spec.name,
                exit_code=code,
                restart_in_seconds=delay,
                log=str(self.log_path(child.spec.name)),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
            child.restarts += 1

    async def stop(self) -> None:
        """SIGTERM every child, SIGKILL those still alive after the grace period."""
        self._stopping = True
        await asyncio.gather(*(self._finish(child) for child in self._children.values()))
        if self._zygote is not None:
            await self._zygote.stop(self.grace_period)

    async def _finish(self, child: _Child) -> None:
        # Cancel the keeper first so nothing respawns; a spawn cancelled midway is killed by
        # asyncio itself, and a child spawned just before is signalled below.
        if child.task is not None:
            child.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await child.task
        process = child.process
        if process is None:
            return
        if child.running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.grace_period)
            except TimeoutError:
                _log.warning("child ignored SIGTERM; killing it", child=child.spec.name)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        signal_group(process.pid, signal.SIGKILL)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
