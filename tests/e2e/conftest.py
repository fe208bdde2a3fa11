"""The whole system as a user runs it: `orchestrator up` in a subprocess, the CLI against it.

`LocalStackProcess` starts the stack exactly like the README does and stops it with SIGINT.
Deployed services run outside the stack (under their own supervisor on the deploy target, as
in production), so teardown stops every process started from the stack's state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from nats.aio.client import Client

from infra.bus.credentials import read_credentials
from infra.bus.permissions import ADMIN
from infra.stack.deploy_account import DEPLOY_ROOT_MARKER, HELPER_PATH
from infra.stack.stack_info import StackInfo, read_stack_info
from infra.vault import VaultClient

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "stop with Ctrl-C"


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line or environment mentions `text` (our state directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(int(proc.name))
    return found


async def admin_nats(info: StackInfo) -> Client:
    """The stack's NATS as its `admin` user, read from Vault with the operator token.

    The stack's server refuses clients without a user; tests that reach under the system (apply
    a durable, read a stored event, forge one) do it as the operator would.
    """
    vault = VaultClient(info.vault_addr, token=info.vault_token)
    credentials = await read_credentials(vault, ADMIN)
    return await nats.connect(info.nats_url, **credentials.connect_options())


@dataclass
class LocalStackProcess:
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    info: StackInfo | None = None
    ready_seconds: float = 0.0
    #: Kept between queries: a waiting test asks about once a second, and a connection each
    #: time is a PostgreSQL backend started and torn down each time.
    _db: psycopg.Connection[Any] | None = field(default=None, repr=False)

    def start(self, timeout: float = 120) -> StackInfo:
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "--state-dir", str(self.state_dir), "up"],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            self.output.append(line)
            if READY_LINE in line:
                break
            if time.monotonic() > deadline:
                break
        info = read_stack_info(self.state_dir)
        if info is None:
            self.stop()
            raise AssertionError("the stack did not come up:\n" + "".join(self.output[-60:]))
        self.ready_seconds = time.monotonic() - started
        self.info = info
        return info

    def cli(
        self, *args: str, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._cli_argv(), *args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )

    def _cli_argv(self) -> list[str]:
        return [sys.executable, "-m", "producers.cli", "--state-dir", str(self.state_dir)]

    def request_at_once(self, descriptions: list[str], timeout: float) -> list[str]:
        """Send every request at once, one `orchestrator request` each (as many terminals
        would), and return their project ids in order; a failed one shows NATS's log."""
        requests = [
            subprocess.Popen(
                [*self._cli_argv(), "request", description],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for description in descriptions
        ]
        project_ids = []
        for process in requests:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err + self.nats_log_tail()
            found = re.search(r"project ([0-9a-f-]{36})", out)
            assert found, out
            project_ids.append(found.group(1))
        return project_ids

    def status(self, project: str) -> dict[str, object]:
        result = self.cli("status", project, "--json")
        assert result.returncode == 0, result.stderr
        loaded: dict[str, object] = json.loads(result.stdout)
        return loaded

    def wait_for_state(
        self, project: str, states: set[str], timeout: float = 300
    ) -> dict[str, object]:
        """The CLI's `status --json` once the project is in one of `states`.

        The wait polls the projects table (one cheap query a second); the CLI, a whole Python
        process, runs once at the end, so a waiting test does not load the machine it measures.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.project_state(project) in states:
                return self.status(project)
            time.sleep(1)
        result = self.cli("status", project, "--json")
        raise AssertionError(
            f"project {project} not in {states} after {timeout}s: {result.stdout}{result.stderr}"
        )

    def project_state(self, project: str) -> str | None:
        """The state of the project named by id, id prefix or slug, read from the database."""
        rows = self.query(
            "SELECT state FROM projects WHERE id::text LIKE %s || '%%' OR slug = %s"
            " ORDER BY created_at DESC LIMIT 1",
            project,
            project,
        )
        return str(rows[0][0]) if rows else None

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows of one query against the stack's database (what an operator's psql would show).

        A connection the stack's restart or kill broke is opened again once."""
        assert self.info is not None
        for attempt in (1, 2):
            if self._db is None or self._db.closed:
                url = self.info.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
                self._db = psycopg.connect(url, autocommit=True)
            try:
                cursor = self._db.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
            except psycopg.OperationalError:
                self.close_query_connection()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close_query_connection(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def nats_log_tail(self, lines: int = 40) -> str:
        """The end of the stack's nats-server log, for a failure message about the bus."""
        return _log_tail("nats-server", self.state_dir / "nats" / "nats-n1.log", lines)

    def diagnostics(
        self, processes: tuple[str, ...] = ("engineer", "deployer"), lines: int = 20
    ) -> str:
        """What a stalled stack shows an operator: `orchestrator lag`, what `up` printed (read
        so far) and its processes' logs. For a failure message: a test that waited in vain says
        where the work stood.
        """
        lag = self.cli("lag", timeout=60)
        parts = [
            f"\norchestrator lag:\n{lag.stdout}{lag.stderr}",
            "\norchestrator up printed:\n" + "".join(self.output[-lines:]),
        ]
        for name in processes:
            parts.append(_log_tail(name, self.state_dir / "logs" / f"{name}.log", lines))
        return "".join(parts)

    def interrupt(self) -> int | None:
        """Ctrl-C, as a person stops `orchestrator up`; returns its exit code."""
        self.close_query_connection()
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self, timeout: float = 30) -> list[int]:
        """SIGKILL everything the stack started at once, as a power cut would; returns the pids.

        The launcher, its supervised processes and their children (git, ansible, ssh), and the
        servers (nats-server, postgres with its backends, bao, sshd with its sessions, git
        daemon) are all frozen with SIGSTOP first and then killed: no process gets to react to
        another's death (the servers' parent-death SIGTERM would otherwise start a graceful
        shutdown). Deployed services are not the stack and keep running. Returns once every
        killed process is gone.
        """
        self.close_query_connection()
        victims: set[int] = set()
        # New processes may be forked while we walk; walk again until a pass finds none.
        while True:
            found = set(self.stack_leftovers())
            if self.process is not None and self.process.poll() is None:
                found |= _descendants(self.process.pid) | {self.process.pid}
            found = {pid for pid in found if not self._deployed(pid)} - victims
            if not found:
                break
            for pid in found:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGSTOP)
            victims |= found
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = {pid: _cmdline(pid) for pid in victims if _alive(pid)}
        assert not alive, f"still alive {timeout}s after SIGKILL: {alive}"
        self.info = None
        return sorted(victims)

    def _deployed(self, pid: int) -> bool:
        """Whether `pid` is a deployed service (it runs from the deploy root), not the stack."""
        alias = self.state_dir / "deployments"
        roots = {str(alias), str(alias.resolve())} if alias.exists() else {str(alias)}
        where = _cmdline(pid) + " " + _cwd(pid)
        return any(root in where for root in roots)

    def stack_leftovers(self) -> list[int]:
        """Processes of the stack itself still alive (deployed services are not the stack)."""
        deployments = str(self.state_dir / "deployments")
        return [
            pid
            for pid in processes_mentioning(str(self.state_dir))
            if deployments not in _cmdline(pid) and not _cwd(pid).startswith(deployments)
        ]

    def remove_deployments(self) -> None:
        """Archive-like clean-up of every project deployed by this stack: processes, users, dirs.

        Releases live under the deploy target's root (outside the state dir when the stack runs
        as root, reached through the `deployments` symlink), each as its own system user; the
        deploy account's privileged helper removes them exactly as an archive does.
        """
        alias = self.state_dir / "deployments"
        if not alias.is_symlink():
            return
        root = alias.resolve()
        if not root.is_dir():
            return
        for project in sorted(p for p in root.iterdir() if p.is_dir()):
            subprocess.run(
                [str(HELPER_PATH), "remove", str(root), project.name],
                capture_output=True,
                check=False,
            )
        (root / DEPLOY_ROOT_MARKER).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            root.rmdir()
            root.parent.rmdir()

    def stop(self) -> int | None:
        code = self.interrupt()
        self.remove_deployments()
        for pid in processes_mentioning(str(self.state_dir)):
            # Deployed services outlive the stack by design; a test leaves none behind.
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while processes_mentioning(str(self.state_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        keep = os.environ.get("ORCH_E2E_KEEP_LOGS")  # a directory to copy the logs into
        if keep and (self.state_dir / "logs").is_dir():
            shutil.copytree(
                self.state_dir / "logs", Path(keep) / self.state_dir.name, dirs_exist_ok=True
            )
        shutil.rmtree(self.state_dir, ignore_errors=True)  # each stack takes 100-200 MB
        return code


#: Descriptions of the three kinds, for tests that send many requests at once.
MIXED_KINDS = (
    "An HTTP API that keeps my notes over REST, called {name}",
    "A Telegram bot that records my expenses by category, called {name}",
    "A background worker that every hour goes through my tasks, called {name}",
)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, whatever session or process group it moved to."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(proc.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _log_tail(name: str, path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"\n(no {name} log: {exc})"
    return f"\n{name} log:\n" + "\n".join(text.splitlines()[-lines:])


def new_state_dir(prefix: str) -> Path:
    # Outside pytest's private temp tree: the PostgreSQL server runs as the postgres user.
    path = Path(tempfile.mkdtemp(prefix=f"orch-{prefix}-"))
    path.chmod(0o711)  # mkdtemp makes it 0700; the postgres user must be able to pass through
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules sharing `offline_stack` last among the e2e tests, so it stops at once.

    The shared stack lives until its package ends; had its modules run first, it would idle
    (ten processes, the deployed services, the health sweeps) on the two cores while every
    later module's stack boots and deploys. Module order is kept otherwise, and each module
    stays in one piece (its module-scoped fixtures are set up once).
    """
    here = Path(__file__).parent
    positions = [i for i, item in enumerate(items) if here in item.path.parents]
    if not positions:
        return
    e2e = [items[i] for i in positions]
    sharing = {item.path for item in e2e if "offline_stack" in getattr(item, "fixturenames", ())}
    ordered = sorted(e2e, key=lambda item: item.path in sharing)  # stable
    for position, item in zip(positions, ordered, strict=True):
        items[position] = item


@pytest.fixture(scope="package")
def offline_stack() -> Iterator[LocalStackProcess]:
    """One embedded stack in offline mode for the e2e tests that only need a running system.

    Package-scoped: it stops with the last e2e test (its deployed services with it) instead of
    idling through the rest of the session."""
    stack = LocalStackProcess(new_state_dir("e2e"), env={"ORCH_LLM__PROVIDER": "offline"})
    stack.start()
    yield stack
    stack.stop()
