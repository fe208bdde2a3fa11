"""Runs one child process with an output cap and a wall-clock limit, killing its whole group.

Shared by every sandbox adapter: whatever isolation wraps the command, the engineer must
never wait forever or buffer unbounded output from model-written code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from consumers.engineer.sandbox.port import SandboxLimits, SandboxResult

_CHUNK = 65536


async def run_bounded(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    limits: SandboxLimits,
    pass_fds: Sequence[int] = (),
) -> SandboxResult:
    """Run `command` in a new session; kill the session on time-out or too much output.

    `pass_fds` are inherited by the command (bubblewrap's seccomp filter)."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True, pass_fds=tuple(pass_fds),
    )
    assert process.stdout is not None
    collected = bytearray()
    exceeded = False

    async def read() -> None:
        nonlocal exceeded
        assert process.stdout is not None
        while chunk := await process.stdout.read(_CHUNK):
            room = limits.output_bytes - len(collected)
            collected.extend(chunk[:max(room, 0)])
            if len(chunk) > room:
                exceeded = True
                _kill_group(process.pid)
                return

    timed_out = False
    try:
        await asyncio.wait_for(read(), limits.wall_seconds)
    except TimeoutError:
        timed_out = True
        _kill_group(process.pid)
    except BaseException:
        _kill_group(process.pid)
        raise
    finally:
        # Whatever happened, no child of a finished run may linger (cancellation included).
        if timed_out or exceeded:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_drain(process.stdout), 10)
    code = await process.wait()
    return SandboxResult(
        exit_code=None if (timed_out or exceeded) else code,
        output=collected.decode(errors="replace"),
        timed_out=timed_out,
        output_exceeded=exceeded,
        elapsed_seconds=time.monotonic() - started,
        limits=limits,
    )


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(_CHUNK):
        pass


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
