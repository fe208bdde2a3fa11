"""`orchestrator up`: the whole platform on one machine, from real servers to every consumer.

Startup order follows dependencies: servers first (NATS, PostgreSQL, OpenBao, sshd, git
daemon), then what needs them running (Vault policies and AppRoles, database migrations,
JetStream streams and durable consumers), then the processes that use all of it under the
supervisor. `stack.json` in the state directory is how other commands find the running stack;
it is written only once everything is ready and removed on shutdown. Shutdown runs in reverse:
consumers first, so nothing is mid-flight when its broker or database goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import importlib.util
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import httpx
import hvac

from infra.bus.credentials import NatsCredentials, store_credentials
from infra.bus.permissions import ADMIN, all_permissions, new_passwords, render_authorization
from infra.stack.credentials import (
    DATABASE_URL_FILE,
    SECRET_ID_FILE,
    CredentialFiles,
    write_private,
)
from infra.stack.git_daemon import GitDaemon
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import (
    SECRET_ID_TTL,
    AppRoleCredentials,
    OpenBaoServer,
    approle_login,
    bootstrap_openbao,
    destroy_secret_id,
    mint_secret_id,
    policy_names,
)
from infra.stack.port_book import PortTaken, booked_ports
from infra.stack.ports import free_port
from infra.stack.postgres_server import PostgresServer
from infra.stack.process import CommandError, ServerStartError, start_together
from infra.stack.sshd_server import Sshd
from infra.stack.stack_info import (
    STACK_FILE,
    DeployTargetInfo,
    StackInfo,
    process_start_ticks,
    read_stack_info,
)
from infra.stack.supervisor import ChildSpec, Supervisor
from infra.stack.zygote_client import Zygote, ZygoteSpec

ENV_FILE = "env"
OPERATOR_ROLE = "operator"
SCHEDULER = "scheduler"
#: The HTTP API serves /metrics on its own port, so its metrics port is its API port.
API = "api"
#: Runs whichever consumers are selected: lag must stay visible while a consumer is down.
LAG_EXPORTER = "lag_exporter"
PROMETHEUS_TARGETS = "prometheus-targets.json"
# The operator token lives 1h (its role's TTL); re-login well before, while the stack runs.
OPERATOR_TOKEN_REFRESH_SECONDS = 30 * 60
# The state dir is private; when PostgreSQL runs as the postgres user (we are root) that user
# must traverse it to reach its cluster, so others may enter (never list) it.
_STATE_DIR_MODE = 0o711 if os.geteuid() == 0 else 0o700
#: What the zygote imports before it forks the stack's processes (infra/stack/zygote.py): the
#: consumer runtime and all it pulls in, about 1,000 modules and 2.4 s of CPU, which 8 of the
#: 11 processes import in full and the other three (scheduler, API, lag exporter) all but 30
#: small modules of ours. Not the union: the analyst's and engineer's LangGraph or the API's
#: FastAPI would then sit in every process. Importing it starts no thread and opens no file.
PRELOADED_MODULES = ("infra.bus.runtime",)
# The table waits this long for every process's /readyz (connected to what it uses).
READY_TIMEOUT = 30.0


def discover_processes() -> dict[str, str]:
    """Process name → module for every runnable consumer package, producers, the lag exporter.

    A package counts when it has a `__main__.py`; packages are located on disk, never imported,
    so a consumer with a broken import fails in its own process, not in the launcher.
    """
    found: dict[str, str] = {}
    for directory in _package_dirs("consumers"):
        for package in sorted(directory.iterdir()):
            if (package / "__main__.py").is_file() and (package / "__init__.py").is_file():
                found[package.name] = f"consumers.{package.name}"
    for directory in _package_dirs("producers"):
        for producer in (SCHEDULER, API):
            if (directory / producer / "__main__.py").is_file():
                found[producer] = f"producers.{producer}"
    found[LAG_EXPORTER] = "infra.lag_exporter"
    return found


def _package_dirs(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


class LocalStack:
    """The servers of the local stack, bootstrapped and migrated, in one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()
        # One NATS user per process with fresh passwords at every start: the server's config
        # holds their bcrypt hashes, Vault the passwords (each readable by its process only).
        self.nats_passwords = new_passwords(all_permissions())
        # Free ports for now; the well-known ones are taken, when free, as the servers start.
        self.nats = NatsServer(
            self.state_dir / "nats", authorization=render_authorization(self.nats_passwords)
        )
        self.postgres = PostgresServer(self.state_dir / "postgres")
        # On disk, not dev mode: secrets people stored must survive a restart of the stack.
        self.openbao = OpenBaoServer(self.state_dir / "openbao")
        self.sshd = Sshd(self.state_dir / "sshd")
        self.git = GitDaemon(self.state_dir / "git")
        self.credentials: dict[str, AppRoleCredentials] = {}
        self.credential_files = CredentialFiles(self.state_dir)
        # Accessors of the secret ids issued to each child, oldest first.
        self._issued: dict[str, list[str]] = {}
        self.timings: dict[str, float] = {}
        #: Durables whose unacknowledged deliveries a killed earlier run left behind.
        self.redelivered: list[str] = []

    def start(self) -> None:
        """Start every server, then apply Vault policies, migrations and the bus topology."""
        from infra.bus.orphaned_deliveries import redeliver_orphaned
        from infra.bus.topology import apply_topology
        from infra.db.migrate import upgrade
        from infra.stack.bootstrap import register_local_target
        from infra.vault import VaultClient

        try:
            self._start_servers()
            with self._timed("vault bootstrap"):
                self.credentials = bootstrap_openbao(
                    self.openbao.addr,
                    self.openbao.root_token,
                    policy_names(),
                    # The launcher rotates them (see issue_credentials); all clients are local.
                    secret_id_ttl=SECRET_ID_TTL,
                    secret_id_bound_cidrs=["127.0.0.1/32"],
                )
                vault = VaultClient(self.openbao.addr, token=self.openbao.root_token)
                asyncio.run(store_credentials(vault, self.nats_passwords))
            with self._timed("migrations"):
                upgrade(self.postgres.url)
            with self._timed("topology"):
                asyncio.run(
                    apply_topology(
                        self.nats.url, connect_options=self.nats_admin().connect_options()
                    )
                )
                # A stack that was killed left deliveries in the hands of processes that are
                # gone; without this their projects stand still for a whole ack wait (5 min).
                self.redelivered = asyncio.run(
                    redeliver_orphaned(
                        self.nats.url, connect_options=self.nats_admin().connect_options()
                    )
                )
            with self._timed("inventory"):
                asyncio.run(
                    register_local_target(
                        database_url=self.postgres.url,
                        vault_addr=self.openbao.addr,
                        vault_token=self.openbao.root_token,
                        host=self.sshd.host,
                        ssh_port=self.sshd.port,
                        ssh_user=self.sshd.user,
                        known_hosts_line=self.sshd.known_hosts_line,
                        client_key_path=self.sshd.client_key_path,
                    )
                )
        except BaseException:
            self.stop()
            raise

    def _start_servers(self) -> None:
        """Start the five servers side by side (about 2 s instead of 3.5 one after another).

        On the ports this state directory's stack had before, or, for a new one, well-known
        ports no other stack holds (`infra.stack.port_book`).
        """
        proposed = {
            "nats": self.nats.port,
            "nats_monitor": self.nats.monitor_port,
            "postgres": self.postgres.port,
            "openbao": self.openbao.port,
            "sshd": self.sshd.port,
            "git": self.git.port,
        }
        with booked_ports(self.state_dir, proposed) as ports:
            self.nats.port, self.nats.monitor_port = ports["nats"], ports["nats_monitor"]
            self.postgres.port = ports["postgres"]
            self.openbao.port = ports["openbao"]
            self.sshd.port = ports["sshd"]
            self.git.port = ports["git"]
            start_together(
                (self.nats, self.postgres, self.openbao, self.sshd, self.git), self.timings
            )

    def stop(self) -> None:
        """Stop the servers, dependents first."""
        for server in (self.git, self.sshd, self.openbao, self.postgres, self.nats):
            server.stop()

    @contextlib.contextmanager
    def _timed(self, part: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.timings[part] = time.monotonic() - started

    def issue_credentials(self, process: str, *, keep_previous: bool = False) -> None:
        """Write `process`'s credentials files: a fresh secret id and the database URL.

        Runs before every (re)start of the process, which destroys every secret id issued to it
        before (the process that held them is gone), and at each rotation, which keeps the one
        just replaced valid so a login that read the file a moment ago still succeeds.
        Synchronous on purpose: three loopback calls, and no rotation can interleave with a start.
        """
        client = hvac.Client(url=self.openbao.addr, token=self.openbao.root_token)
        fresh = mint_secret_id(client, process)
        self.credential_files.write(process, SECRET_ID_FILE, fresh.secret_id + "\n")
        self.credential_files.write(process, DATABASE_URL_FILE, self.postgres.url + "\n")
        issued = self._issued.setdefault(process, [])
        if not issued and process in self.credentials:
            issued.append(self.credentials[process].accessor)  # the bootstrap's, never used
        kept = issued[-1:] if keep_previous else []
        for accessor in issued[: len(issued) - len(kept)]:
            destroy_secret_id(client, process, accessor)
        self._issued[process] = [*kept, fresh.accessor]

    def rotate_credentials(self) -> None:
        """A fresh secret id for every child issued one; each old one lapses a rotation later."""
        for process in list(self._issued):
            self.issue_credentials(process, keep_previous=True)

    def nats_admin(self) -> NatsCredentials:
        """The NATS user that manages streams (the launcher's own, and the operator CLI's)."""
        return NatsCredentials(ADMIN, self.nats_passwords[ADMIN])

    def operator_token(self) -> str:
        """A fresh token for the operator CLI's role (never the root token)."""
        return approle_login(self.openbao.addr, self.credentials[OPERATOR_ROLE])

    def info(self, vault_token: str, metrics_ports: dict[str, int]) -> StackInfo:
        """Describe the running stack for `stack.json`."""
        env = {
            "ORCH_NATS__URL": self.nats.url,
            "ORCH_DATABASE__URL": self.postgres.url,
            "ORCH_VAULT__ADDR": self.openbao.addr,
            "ORCH_VAULT__TOKEN": vault_token,
            "ORCH_STATE_DIR": str(self.state_dir),
        }
        return StackInfo(
            pid=os.getpid(),
            pid_start_ticks=process_start_ticks(os.getpid()),
            state_dir=str(self.state_dir),
            nats_url=self.nats.url,
            nats_monitor_url=self.nats.monitor_url,
            database_url=self.postgres.url,
            vault_addr=self.openbao.addr,
            vault_token=vault_token,
            git_base_url=self.git.base_url,
            git_base_dir=str(self.git.data_dir),
            deploy_target=DeployTargetInfo(
                host=self.sshd.host,
                port=self.sshd.port,
                user=self.sshd.user,
                known_hosts_line=self.sshd.known_hosts_line,
                client_key_path=str(self.sshd.client_key_path),
            ),
            metrics_ports=metrics_ports,
            log_dir=str(self.state_dir / "logs"),
            env=env,
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def run_up(
    state_dir: Path,
    *,
    consumers: Sequence[str] | None = None,
    on_ready: Callable[[StackInfo], None] | None = None,
) -> int:
    """Run the local stack in the foreground until SIGINT or SIGTERM; return the exit code.

    `consumers` defaults to every consumer package with a `__main__`; the scheduler, the API
    and the lag exporter run too, whatever `consumers` says. `on_ready` is called once
    `stack.json` is written and every process serves /metrics (or `METRICS_READY_TIMEOUT`
    passed). Returns 0
    after a requested shutdown, 1 if a stack already runs here or the stack could not start.
    Must be called from the main thread: it handles signals, and children are tied to the
    thread that spawns them.
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(_STATE_DIR_MODE)
    running = read_stack_info(state_dir)
    if running is not None:
        print(f"a stack is already running (pid {running.pid}): {running.endpoints()}")
        return 1
    with _exclusive(state_dir) as acquired:
        if not acquired:
            print(f"a stack is already starting from {state_dir}")
            return 1
        try:
            processes = _select_processes(consumers)
        except ValueError as error:
            print(f"orchestrator up: {error}", file=sys.stderr)
            return 1
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        # Everything the stack writes (logs, stack.json, the console chat, credentials) is its
        # user's alone; children inherit the umask.
        previous_umask = os.umask(0o077)
        # The zygote preloads while the servers start; nothing forks from it before they run.
        zygote = Zygote(
            ZygoteSpec(
                PRELOADED_MODULES,
                env={"PYTHONUNBUFFERED": "1", "ORCH_STATE_DIR": str(state_dir)},
                cwd=_project_root(),
            ),
            state_dir / "logs" / "zygote.log",
        )
        try:
            zygote.launch()
            with LocalStack(state_dir) as stack:
                return asyncio.run(_serve(stack, processes, zygote, on_ready))
        except (ServerStartError, CommandError, PortTaken, FileNotFoundError) as error:
            print(f"orchestrator up: the local stack could not start: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            zygote.kill()  # only if the stack failed before the supervisor stopped it
            os.umask(previous_umask)
            signal.signal(signal.SIGTERM, previous)
            (state_dir / STACK_FILE).unlink(missing_ok=True)


def _select_processes(consumers: Sequence[str] | None) -> dict[str, str]:
    available = discover_processes()
    if consumers is None:
        selected = available
    else:
        unknown = sorted(set(consumers) - set(available))
        if unknown:
            raise ValueError(
                f"no runnable consumer package for {', '.join(unknown)} "
                f"(runnable: {', '.join(sorted(available)) or 'none'})"
            )
        selected = {name: available[name] for name in consumers}
        for producer in (SCHEDULER, API, LAG_EXPORTER):
            if producer in available:
                selected[producer] = available[producer]
    missing_policy = sorted(set(selected) - set(policy_names()))
    if missing_policy:
        raise ValueError(
            f"{', '.join(missing_policy)} has no Vault policy in infra/openbao/policies/; "
            "every process logs in with its own least-privilege policy"
        )
    return selected


async def _serve(
    stack: LocalStack,
    processes: dict[str, str],
    zygote: Zygote,
    on_ready: Callable[[StackInfo], None] | None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    metrics_ports = _distinct_free_ports(len(processes))
    ports_by_process = dict(zip(processes, metrics_ports, strict=True))
    info = stack.info(stack.operator_token(), ports_by_process)
    _write_private(stack.state_dir / STACK_FILE, json.dumps(info.to_json(), indent=2) + "\n")
    _write_private(stack.state_dir / ENV_FILE, _shell_env(info.env))
    # Prometheus file_sd targets (infra/prometheus/prometheus.yml reads a file of this shape).
    (stack.state_dir / PROMETHEUS_TARGETS).write_text(
        json.dumps(
            [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"process": name}}
                for name, port in ports_by_process.items()
            ],
            indent=2,
        )
        + "\n"
    )

    supervisor = Supervisor(Path(info.log_dir), zygote=zygote)
    try:
        project_root = _project_root()
        for name, module in processes.items():
            credentials = stack.credentials[name]
            private = stack.credential_files.directory(name)
            supervisor.start(
                ChildSpec(
                    name=name,
                    argv=[sys.executable, "-m", module],
                    module=module,
                    env={
                        "ORCH_PROCESS_NAME": name,
                        "ORCH_NATS__URL": info.nats_url,
                        "ORCH_DATABASE__URL_FILE": str(private / DATABASE_URL_FILE),
                        "ORCH_VAULT__ADDR": info.vault_addr,
                        "ORCH_VAULT__ROLE_ID": credentials.role_id,
                        "ORCH_VAULT__SECRET_ID_FILE": str(private / SECRET_ID_FILE),
                        "ORCH_METRICS__PORT": str(ports_by_process[name]),
                        "ORCH_STATE_DIR": str(stack.state_dir),
                        "ORCH_REPO_LOCAL_BASE": info.git_base_dir,
                        "ORCH_REPO_DAEMON_URL": info.git_base_url,
                        "ORCH_DEPLOYER__DEPLOY_ROOT": str(stack.sshd.deploy_root),
                        "PYTHONUNBUFFERED": "1",
                        **({"ORCH_API__PORT": str(ports_by_process[name])} if name == API else {}),
                        **(
                            {"ORCH_LAG_EXPORTER__MONITOR_URLS": info.nats_monitor_url}
                            if name == LAG_EXPORTER
                            else {}
                        ),
                    },
                    cwd=project_root,
                    before_start=functools.partial(stack.issue_credentials, name),
                )
            )
        ready_in = await _wait_until_ready(ports_by_process, stop)
        _print_table(stack, info, ready_in)
        if on_ready is not None:
            on_ready(info)
        refresher = asyncio.create_task(_refresh_operator_token(stack, info))
        await stop.wait()
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
    finally:
        await supervisor.stop()
        (stack.state_dir / STACK_FILE).unlink(missing_ok=True)
    return 0


async def _wait_until_ready(ports: dict[str, int], stop: asyncio.Event) -> dict[str, float | None]:
    """Seconds until each process answers /readyz with 200, None if it did not in time."""
    started = time.monotonic()
    ready: dict[str, float | None] = dict.fromkeys(ports)
    async with httpx.AsyncClient(timeout=5.0) as http:
        while time.monotonic() - started < READY_TIMEOUT and not stop.is_set():
            for name, port in ports.items():
                if ready[name] is None and await _is_ready(http, port):
                    ready[name] = time.monotonic() - started
            if all(value is not None for value in ready.values()):
                break
            await asyncio.sleep(0.2)
    return ready


async def _is_ready(http: httpx.AsyncClient, port: int) -> bool:
    try:
        return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def _refresh_operator_token(stack: LocalStack, info: StackInfo) -> None:
    while True:
        await asyncio.sleep(OPERATOR_TOKEN_REFRESH_SECONDS)
        stack.rotate_credentials()
        token = await asyncio.to_thread(stack.operator_token)
        info = stack.info(token, info.metrics_ports)
        _write_private(stack.state_dir / STACK_FILE, json.dumps(info.to_json(), indent=2) + "\n")
        _write_private(stack.state_dir / ENV_FILE, _shell_env(info.env))


def _print_table(stack: LocalStack, info: StackInfo, ready_in: dict[str, float | None]) -> None:
    target = info.deploy_target
    rows: list[tuple[str, str, str]] = [
        ("nats", f"{info.nats_url} (monitor {info.nats_monitor_url})", _secs(stack, "nats-n1")),
        ("postgres", stack.postgres.display_url, _secs(stack, "postgres")),
        ("openbao", info.vault_addr, _secs(stack, "openbao")),
        ("sshd", f"ssh://{target.user}@{target.host}:{target.port}", _secs(stack, "sshd")),
        ("git daemon", info.git_base_url, _secs(stack, "git-daemon")),
        ("vault bootstrap", f"{len(stack.credentials)} AppRoles", _secs(stack, "vault bootstrap")),
        ("migrations", "applied", _secs(stack, "migrations")),
        ("topology", _topology_summary(stack), _secs(stack, "topology")),
    ]
    for name, port in info.metrics_ports.items():
        seconds = ready_in.get(name)
        where = f"http://127.0.0.1:{port}" + (
            " (HTTP API)" if name == API else " (/metrics, /livez, /readyz)"
        )
        rows.append(
            (
                name,
                where,
                f"{seconds:.1f}s" if seconds is not None else "not ready yet (ask its /readyz)",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    print(f"local stack up (pid {info.pid}); state in {info.state_dir}, logs in {info.log_dir}")
    for part, where, ready in rows:
        print(f"  {part:<{widths[0]}}  {where:<{widths[1]}}  {ready}")
    print(f"clients: source {Path(info.state_dir) / ENV_FILE}; stop with Ctrl-C", flush=True)


def _topology_summary(stack: LocalStack) -> str:
    if not stack.redelivered:
        return "streams and consumers applied"
    return (
        "streams and consumers applied; unacknowledged messages of the last run redelivered "
        f"({', '.join(stack.redelivered)})"
    )


def _secs(stack: LocalStack, part: str) -> str:
    return f"{stack.timings[part]:.1f}s"


def _distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def _project_root() -> Path | None:
    """The directory that holds the `consumers` package, so `python -m consumers.x` finds it."""
    dirs = _package_dirs("consumers")
    return dirs[0].parent if dirs else None


def _shell_env(env: dict[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600: the file holds a Vault token."""
    write_private(path, text)


@contextlib.contextmanager
def _exclusive(state_dir: Path) -> Iterator[bool]:
    """Hold `state_dir/up.lock` for the life of the stack; yields False if another holds it."""
    with (state_dir / "up.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM during startup unwinds like Ctrl-C, so started servers are stopped."""
    raise KeyboardInterrupt
