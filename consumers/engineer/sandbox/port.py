"""The sandbox port: how the engineer runs model-written code (installs, tests) on its host.

Everything a generated project brings (its requirements, its tests, its app) is treated as
hostile. The engineer never starts such a process itself: it asks a `Sandbox` to run an argv
with a workspace, an explicit set of extra mounts, an allowlisted environment and resource
limits, and gets back a `SandboxResult` that says in words what happened (exit code, signal,
time-out, output cap). Adapters live beside this module; `factory.build_sandbox` picks one
from `ORCH_ENGINEER_SANDBOX`.

Paths are the same inside and outside: a mount makes `source` visible at the same absolute
path, so a command line built for the sandbox also runs unchanged without one.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class SandboxUnavailable(RuntimeError):
    """The configured sandbox cannot run on this host (binary missing, no user namespaces)."""


@dataclass(frozen=True)
class Mount:
    """A host path shown inside the sandbox at the same path, read-only unless `writable`."""

    path: Path
    writable: bool = False


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run resource limits; each bounds one way hostile code could exhaust the host."""

    #: CPU seconds per process (RLIMIT_CPU): SIGXCPU, then SIGKILL.
    cpu_seconds: int = 600
    #: Address space per process (RLIMIT_AS): allocations beyond it fail with MemoryError.
    memory_bytes: int = 2 * 1024**3
    #: Processes the sandbox user may have at once (RLIMIT_NPROC): bounds a fork bomb.
    processes: int = 256
    #: Open file descriptors per process (RLIMIT_NOFILE).
    open_files: int = 1024
    #: Largest file a process may write (RLIMIT_FSIZE): SIGXFSZ beyond it.
    file_size_bytes: int = 256 * 1024**2
    #: Combined stdout/stderr kept; more kills the run.
    output_bytes: int = 1024**2
    #: Wall-clock seconds before the whole run (every process in it) is killed.
    wall_seconds: float = 600.0


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did, in a form a person or a model can act on."""

    #: The exit code; negative for a signal (as `subprocess` reports it); None if we killed it.
    exit_code: int | None
    output: str
    timed_out: bool = False
    output_exceeded: bool = False
    elapsed_seconds: float = 0.0
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.output_exceeded

    def describe(self) -> str:
        """One sentence: why the run ended."""
        if self.timed_out:
            return (
                f"killed after {self.limits.wall_seconds:.0f} s (the sandbox's wall-clock limit); "
                "a test or the app may hang, loop or wait on the network, which is unreachable"
            )
        if self.output_exceeded:
            return (
                f"killed after printing more than {self.limits.output_bytes} bytes "
                "(the sandbox's output limit)"
            )
        if self.exit_code is None:
            return "killed"
        if self.exit_code >= 0:
            return f"exited {self.exit_code}"
        return _signal_reason(-self.exit_code, self.limits)


def _signal_reason(number: int, limits: SandboxLimits) -> str:
    reasons: dict[int, str] = {
        signal.SIGXCPU: f"used more than {limits.cpu_seconds} s of CPU (the sandbox's CPU limit)",
        signal.SIGXFSZ: (
            f"wrote a file larger than {limits.file_size_bytes} bytes (the sandbox's file size "
            "limit)"
        ),
        signal.SIGKILL: "was killed (SIGKILL: the CPU or memory limit, or the time-out)",
        signal.SIGSEGV: "crashed (SIGSEGV), possibly out of memory under the sandbox's limit",
    }
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return reasons.get(number) or f"was killed by {name}"


class Sandbox(Protocol):
    """Runs model-written code away from the platform."""

    #: Short name for logs and docs ("bubblewrap", "unsandboxed").
    name: str

    async def run(
        self,
        argv: Sequence[str],
        workspace: Path,
        *,
        network: bool,
        limits: SandboxLimits,
        env: Mapping[str, str],
        mounts: Sequence[Mount] = (),
        writable_workspace: bool = True,
    ) -> SandboxResult:
        """Run `argv` with `workspace` as the working directory.

        `env` is the whole environment (nothing is inherited). `network=False` means no network
        at all (a private loopback); `network=True` is for dependency installs only. `mounts` are
        the only host paths visible besides the read-only system and the workspace; the
        workspace's `.git` is always read-only.
        """
        ...

    async def prepare_writable(self, path: Path) -> None:
        """Make `path` (a directory the engineer created) writable by the sandboxed code."""
        ...

    async def reclaim(self, path: Path) -> None:
        """Give `path` back to the engineer after a run (ownership, never following links)."""
        ...
