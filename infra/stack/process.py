"""The shared shape of every server the stack runs: spawn, wait until ready, stop, never orphan.

A server is a child process in its own session (so a Ctrl-C aimed at the terminal reaches the
launcher, which then stops its children in order) that the kernel signals when we die
(PR_SET_PDEATHSIG), so a crashed or SIGKILLed parent leaves nothing listening behind. Output goes
to one log file per server in its data directory; when a server fails to come up the error quotes
the tail of that log, because that is where the reason is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

_PR_SET_PDEATHSIG = 1
#: Variables of the operator's environment a child may see: what a program needs to run, never
#: what the operator happens to have exported (cloud keys, tokens, a VAULT_TOKEN).
_INHERITED = frozenset(
    {"PATH", "LANG", "LANGUAGE", "HOME", "TZ", "TMPDIR", "USER", "LOGNAME", "VIRTUAL_ENV"}
    # A site's own certificate authority, for HTTPS to an LLM provider or GitHub.
    | {"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"}
)
_INHERITED_PREFIXES = ("LC_", "PYTHON", "ORCH_", "COVERAGE_", "COV_CORE_")
#: Settings that hold a credential; they reach a process through its credentials file instead.
_SECRET_SUFFIXES = ("TOKEN", "SECRET_ID", "PASSWORD", "API_KEY", "DATABASE__URL")
_LOG_TAIL_LINES = 40
_POLL_SECONDS = 0.05


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the command and its log tail."""


class CommandError(RuntimeError):
    """A one-shot setup command (initdb, ssh-keygen) failed; the message carries its output."""


def parent_death_preexec(death_signal: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive `death_signal` when this process dies.

    The kernel delivers the signal when the *thread* that forked the child exits, so children
    must be spawned from a thread that lives as long as they should (the main thread or the
    event loop's thread, never a worker pool). libc is loaded here, before the fork, because
    loading a library in the forked child is not async-signal-safe.
    """
    parent_pid = os.getpid()
    if not sys.platform.startswith("linux"):
        return lambda: None
    libc = ctypes.CDLL(None, use_errno=True)

    def _preexec() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died between fork and prctl; then nobody will signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return _preexec


def is_secret_variable(name: str) -> bool:
    """Whether `name` is a setting carrying a credential (a token, a password, a URL with one)."""
    return name.upper().endswith(_SECRET_SUFFIXES)


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child of the stack: the allowlisted part of ours, plus `extra`.

    Children never inherit the operator's whole environment, and never a secret setting from
    it: `extra` is the only way a variable the allowlist drops reaches a child.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if (name in _INHERITED or name.startswith(_INHERITED_PREFIXES))
        and not is_secret_variable(name)
    }
    env.update(extra or {})
    return env


def run_checked(argv: Sequence[str], *, what: str, user: str | None = None) -> str:
    """Run a one-shot setup command and return its output, or raise with the output included."""
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
        env=child_environment(),
        preexec_fn=parent_death_preexec(),
    )
    if result.returncode != 0:
        raise CommandError(
            f"{what} failed (exit code {result.returncode}): {' '.join(argv)}\n"
            f"{result.stdout}{result.stderr}".rstrip()
        )
    return result.stdout


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by `pid`, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def running_in_group(pgid: int) -> list[int]:
    """Pids of the processes of group `pgid` that still run (a zombie runs nothing)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # it exited while we looked
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def kill_group(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL the group led by `pid`; return once none of its processes runs, or `timeout`.

    A SIGKILL is sent, not yet delivered: on a busy machine a forked helper (a git daemon
    connection, an sshd session) was still running a moment after `killpg` returned."""
    signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while running_in_group(pid) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)


class ManagedProcess(ABC):
    """One server binary run as a child process that cannot outlive us.

    Subclasses say how to prepare their data directory, which command to run and how to tell
    that the server answers. `start()` returns only once it does; `stop()` asks politely
    (`stop_signal`), waits, then kills the whole process group so forked helpers (sshd
    sessions, git daemon connections) go too. Ports and data stay the same across restarts.
    """

    stop_signal: signal.Signals = signal.SIGTERM
    startup_timeout: float = 30.0

    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        self.data_dir = data_dir.resolve()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @abstractmethod
    def _command(self) -> list[str]:
        """The argv of the server process."""

    @abstractmethod
    def _is_ready(self) -> bool:
        """Whether the server answers its clients now; must not raise."""

    def _prepare(self) -> None:  # noqa: B027 -- optional hook; most servers need none
        """Create what the server needs before it runs (keys, a cluster); runs before each start."""

    def _on_ready(self) -> None:  # noqa: B027 -- optional hook; most servers need none
        """Work that needs the running server (roles, databases); runs after each start."""

    def _environment(self) -> Mapping[str, str]:
        """Variables added to the allowlisted environment of the server process."""
        return {}

    def _run_as(self) -> str | None:
        """The user the server runs as, or None for the current user."""
        return None

    @property
    def log_path(self) -> Path:
        """Where the server's stdout and stderr go (appended across restarts)."""
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def launch(self) -> None:
        """Spawn the server without waiting for it (a cluster launches all nodes, then waits)."""
        self.prepare()
        self.spawn()

    def prepare(self) -> None:
        """Make the data directory ready (keys, a new cluster): any thread may do this part."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()

    def spawn(self) -> None:
        """Start the server process, from a thread that outlives it (`parent_death_preexec`)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        user = self._run_as()
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=child_environment(self._environment()),
                start_new_session=True,
                preexec_fn=parent_death_preexec(self.stop_signal),
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
            )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server answers, or raise `ServerStartError` with its log tail."""
        if self._process is None:
            raise RuntimeError(f"{self.name} was never launched")
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not self._is_ready():
            code = self._process.poll()
            if code is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {code} while starting: "
                    f"{' '.join(self._command())}\n--- {self.log_path} ---\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} did not become ready within {limit:.0f}s: "
                    f"{' '.join(self._command())}\n--- {self.log_path} ---\n{self.log_tail()}"
                )
            time.sleep(_POLL_SECONDS)
        self._on_ready()

    def start(self) -> Self:
        """Launch the server and wait until it answers; on failure nothing is left running."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully with `stop_signal`; SIGKILL whatever is left after `timeout`."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(self.stop_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        kill_group(process.pid)
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server and its process group at once, as a crash would."""
        process = self._process
        if process is None:
            return
        kill_group(process.pid)  # the leader too, left a zombie until the wait below
        process.kill()
        process.wait()
        self._process = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines the server wrote since its latest start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_together(
    servers: Sequence[ManagedProcess], timings: dict[str, float] | None = None
) -> None:
    """Start independent servers side by side: the slowest sets the pace, not their sum.

    Each prepares its data (an initdb, host keys) and then waits for its binary to answer in a
    thread of its own, but every server process is spawned from the calling thread, because
    the kernel's parent-death signal follows the thread that forked (`parent_death_preexec`).
    `timings` gets each server's seconds from the start to ready. The first failure is raised
    once every thread is done; the caller stops what did start, as after any failed start.
    """
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(len(servers), 1)) as pool:
        for future in [pool.submit(server.prepare) for server in servers]:
            future.result()
        for server in servers:
            server.spawn()

        def ready(server: ManagedProcess) -> None:
            server.wait_ready()
            if timings is not None:
                timings[server.name] = time.monotonic() - started

        waits = [pool.submit(ready, server) for server in servers]
        errors = [error for error in (future.exception() for future in waits) if error]
    if errors:
        raise errors[0]
