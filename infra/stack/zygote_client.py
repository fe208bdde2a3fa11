"""The supervisor's side of the zygote (infra/stack/zygote.py): start it, fork through it, watch.

The zygote is the supervisor's child, in its own session and tied to the supervisor's event
loop thread by PDEATHSIG like every other child. Children it forks are not the supervisor's
children, so the supervisor cannot reap them: their exit codes come over the control channel,
and each child is also held by a pidfd, which tells when it is gone even if the zygote died
first (its children then get SIGTERM from the kernel and their code is unknown) and makes a
signal reach that very process, never a later one that reused its pid. A zygote that died is
started again by the next spawn, so the supervisor's restarts bring back the children it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from infra.stack.process import child_environment, parent_death_preexec, signal_group

_log = structlog.get_logger(__name__)
#: Preloading takes 2 to 4 s of CPU; a busy machine stretches that.
PRELOAD_TIMEOUT = 120.0


class ZygoteError(RuntimeError):
    """The zygote could not start or fork a child; the message says why and where its log is."""


@dataclass(frozen=True)
class ZygoteSpec:
    """What the zygote preloads, and the environment and directory it runs in.

    Its environment reaches no child (each gets exactly its own), but it is what
    `/proc/<pid>/environ` of every forked child shows, and it decides the interpreter's
    startup options (`PYTHON*`), so it carries what every child would carry.
    """

    preload: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


class ForkedChild:
    """A process the zygote forked: its pid, its exit code once the zygote reaped it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._finished = asyncio.Event()
        self._zygote_gone = False
        self._loop = asyncio.get_running_loop()
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone and reaped; its exit notice is on the way
            self._pidfd = None
        else:
            self._loop.add_reader(self._pidfd, self._on_gone)

    def exited(self, code: int) -> None:
        """The zygote reaped this child with `code`."""
        self.returncode = code
        self._finish()

    def zygote_gone(self) -> None:
        """The zygote died: the child ends on its PDEATHSIG, and nobody will report its code."""
        self._zygote_gone = True
        if self._pidfd is None:
            self._finish()

    def _on_gone(self) -> None:
        self._close_pidfd()
        if self._zygote_gone:
            self._finish()

    def _finish(self) -> None:
        self._close_pidfd()
        self._finished.set()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def wait(self) -> int | None:
        """The exit code, once the child is gone; None if its zygote died before reporting it."""
        await self._finished.wait()
        return self.returncode

    def send_signal(self, sig: int, /) -> None:
        """Signal this process (never another that reused its pid); ProcessLookupError if gone."""
        if self._pidfd is None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """Starts the zygote (ahead of time with `launch`, else on first use, and again after it
    died) and forks children through it."""

    def __init__(self, spec: ZygoteSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._requests: dict[int, asyncio.Future[ForkedChild]] = {}
        self._children: dict[int, ForkedChild] = {}
        self._next_id = 0
        self._lock = asyncio.Lock()
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The zygote's process id while it serves."""
        return self._process.pid if self._writer is not None and self._process else None

    def launch(self) -> None:
        """Start the zygote without waiting: it preloads while the caller does other work.

        Call from the thread that runs the event loop later (PDEATHSIG, see `process.py`).
        """
        if self._process is not None:
            return
        ours, theirs = socket.socketpair()
        with theirs:
            self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(descriptor, "ab") as log:
                try:
                    self._process = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "infra.stack.zygote",
                            str(theirs.fileno()),
                            *self.spec.preload,
                        ],
                        pass_fds=[theirs.fileno()],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=child_environment(self.spec.env),
                        cwd=self.spec.cwd,
                        start_new_session=True,
                        preexec_fn=parent_death_preexec(),
                    )
                except BaseException:
                    ours.close()
                    raise
        self._control = ours

    def kill(self) -> None:
        """SIGKILL a zygote that was launched but never served (the stack failed to start)."""
        process, self._process = self._process, None
        if process is not None:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
        if self._control is not None:
            self._control.close()
            self._control = None

    async def spawn(
        self, name: str, module: str, env: Mapping[str, str], cwd: Path | None, log: Path
    ) -> ForkedChild:
        """Fork a child running `python -m module` with exactly `env`, output to `log`."""
        async with self._lock:
            if self._writer is None:
                await self._connect()
            assert self._writer is not None
            self._next_id += 1
            request_id = self._next_id
            answer: asyncio.Future[ForkedChild] = asyncio.get_running_loop().create_future()
            self._requests[request_id] = answer
            request = {
                "id": request_id,
                "name": name,
                "module": module,
                "env": dict(env),
                "cwd": str(cwd) if cwd is not None else None,
                "log": str(log),
            }
            self._writer.write(json.dumps(request).encode() + b"\n")
            await self._writer.drain()
        return await answer

    async def _connect(self) -> None:
        """Launch the zygote unless it was, and wait for it to report ready."""
        self.launch()
        process, control = self._process, self._control
        assert process is not None and control is not None
        self._control = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=control)
        except BaseException:
            control.close()
            self.kill()
            raise
        try:
            line = await asyncio.wait_for(reader.readline(), PRELOAD_TIMEOUT)
            ready = json.loads(line) if line else {}
        except (TimeoutError, ValueError):
            ready = {}
        if not ready.get("ready") or ready.get("threads") != 1:
            writer.close()
            self.kill()
            raise ZygoteError(
                f"the zygote did not become ready ({ready or 'no answer'}); see {self.log_path}"
            )
        _log.info("zygote ready", pid=process.pid, failed_preloads=ready.get("failed"))
        self._writer = writer
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read(reader), name="zygote-reader"
        )

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if "exited" in message:
                child = self._children.pop(message["exited"], None)
                if child is not None:
                    child.exited(message["code"])
                continue
            answer = self._requests.pop(message["id"])
            if "pid" in message:
                child = ForkedChild(message["pid"])
                # Kept even when its spawn was cancelled meanwhile: `stop` kills what is here.
                self._children[child.pid] = child
                if not answer.done():
                    answer.set_result(child)
            elif not answer.done():
                answer.set_exception(ZygoteError(f"the zygote could not fork: {message['error']}"))
        await self._gone()

    async def _gone(self) -> None:
        """The channel closed: the zygote is dead or dying; its children die with it."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for answer in self._requests.values():
            if not answer.done():  # a cancelled spawn's answer is done already
                answer.set_exception(ZygoteError(f"the zygote exited; see {self.log_path}"))
        self._requests.clear()
        for child in self._children.values():
            child.zygote_gone()
        self._children.clear()
        process, self._process = self._process, None
        if process is not None:
            code = await asyncio.to_thread(_reap, process, None)
            if not self._stopping:
                _log.warning(
                    "zygote exited", pid=process.pid, exit_code=code, log=str(self.log_path)
                )

    async def stop(self, grace_period: float) -> None:
        """Close the channel (the zygote exits), kill it if it lingers; call once its children
        are stopped."""
        self._stopping = True
        # A child whose spawn was cancelled midway was never handed to the supervisor.
        for child in self._children.values():
            signal_group(child.pid, signal.SIGKILL)
        if self._writer is None:
            self.kill()  # launched ahead of time and never used
            return
        self._writer.close()
        process = self._process
        if process is not None:
            await asyncio.to_thread(_reap, process, grace_period)
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


def _reap(process: subprocess.Popen[bytes], timeout: float | None) -> int:
    """Wait for the zygote (SIGKILL after `timeout`), then kill what is left of its group."""
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    signal_group(process.pid, signal.SIGKILL)
    return code
