"""Fixtures for deploy tests: a real git repository of a tiny service, a migrated database with
the local sshd in its inventory, Vault holding the server key and a project secret, and an audit
that proves no secret escapes into ansible-runner's files, events or any process's argv.

Deploys log in as the dedicated `orch-deploy` account and run each project as its own system
user, so what those users must reach (the repository, the deploy root) lives in directories
other users can traverse, not under pytest's private temp dir.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.deployer.service import DeployerConfig, DeployerService
from consumers.deployer.sql_inventory import SqlServerInventory
from consumers.deployer.sql_records import SqlDeploymentRecords
from consumers.deployer.vault_secrets import VaultSecretSource
from contracts.envelope import Event
from contracts.events import DeployRequested, DeployRestartRequested, DeployStopRequested
from infra.db.migrate import upgrade
from infra.db.models import Deployment, Server, ServerState
from infra.db.session import make_engine, make_sessionmaker
from infra.playbook_runner import AnsibleRunner
from infra.repo_urls import ForgeSettings
from infra.stack.deploy_account import HELPER_PATH, prepare_deploy_root
from infra.stack.git_daemon import GitDaemon
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import port_is_free
from infra.stack.postgres_server import PostgresServer
from infra.stack.sshd_server import Sshd
from infra.vault import VaultClient
from tests.ports import worker_share

SERVER_NAME = "local"

_used_service_ports: set[int] = set()


def service_port() -> int:
    """A free port for a deployed service, in 20000-20999 (this xdist worker's share).

    Every test server's port comes from `free_port()`, which is in the ephemeral range
    (`/proc/sys/net/ipv4/ip_local_port_range`), so a service port chosen early (at import) can
    never be taken by a server started later: that happened once, and the deploy's health
    check asked OpenBao instead of the service. Nor can a stack's deploy take it: the embedded
    default range is 21000-21999 and the e2e stacks' blocks lie above 22000.
    """
    start, end = worker_share(20000, 21000)
    while True:
        port = random.randrange(start, end)
        if port not in _used_service_ports and port_is_free(port):
            _used_service_ports.add(port)
            return port


APP_MAIN = '''\
"""A stdlib HTTP service: what a generated project looks like to the deployer."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTHY = {healthy}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            status = 200 if HEALTHY else 500
            body = {{"status": "ok" if HEALTHY else "broken",
                     "version": os.environ.get("APP_VERSION", "")}}
        elif self.path == "/config":
            status = 200
            body = {{"set": sorted(k for k in ("API_TOKEN", "GREETING", "TELEGRAM_BOT_TOKEN")
                                   if os.environ.get(k))}}
        else:
            status, body = 404, {{}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass(frozen=True)
class ServiceRepo:
    """A bare repository with a healthy commit, a second healthy one and a broken one."""

    clone_url: str
    good: str
    good_v2: str
    broken: str
    #: Healthy code whose deploy.json points the health check at another host.
    foreign_health: str


def _commit_app(work: Path, *, healthy: bool, message: str) -> str:
    (work / "app" / "__main__.py").write_text(APP_MAIN.format(healthy=healthy))
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", message)
    return _git(work, "rev-parse", "HEAD")


def shared_dir(prefix: str) -> Path:
    """A temp dir every user can traverse and read (project users clone from it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def project_processes(user: str) -> list[int]:
    """Pids of every process running as `user`."""
    found = subprocess.run(["pgrep", "-u", user], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def remove_projects(root: Path) -> None:
    """Kill every project's processes and delete its user, as an archive does."""
    for project in root.iterdir():
        if project.is_dir():
            subprocess.run(
                [str(HELPER_PATH), "remove", str(root), project.name],
                check=False, capture_output=True,
            )  # fmt: skip


@pytest.fixture(scope="module")
def service_repo(tmp_path_factory: pytest.TempPathFactory, git_daemon: GitDaemon) -> ServiceRepo:
    """Served by the git daemon, as the platform's repositories are: each project's user
    clones it over git://, and git refuses a local repository another user owns."""
    base = tmp_path_factory.mktemp("repo")
    name = f"deploy-service-{uuid.uuid4().hex[:8]}"
    bare = git_daemon.path_for(name)
    work = base / "work"
    _git(base, "init", "-q", "--bare", str(bare))
    _git(base, "init", "-q", "-b", "main", str(work))
    _git(work, "config", "user.email", "test@example.invalid")
    _git(work, "config", "user.name", "test")
    (work / "app").mkdir()
    (work / "app" / "__init__.py").write_text("")
    (work / "requirements.txt").write_text("# stdlib only\n")
    (work / "deploy.json").write_text(
        json.dumps(
            {
                "start": ["python", "-m", "app"],
                "health_path": "/health",
                "optional_secrets": ["TELEGRAM_BOT_TOKEN"],
            }
        )
    )
    good = _commit_app(work, healthy=True, message="healthy service")
    (work / "README.md").write_text("second release\n")
    good_v2 = _commit_app(work, healthy=True, message="second healthy release")
    broken = _commit_app(work, healthy=False, message="broken health check")
    manifest = json.loads((work / "deploy.json").read_text())
    (work / "deploy.json").write_text(
        json.dumps({**manifest, "health_path": "@169.254.169.254/latest/meta-data"})
    )
    foreign_health = _commit_app(work, healthy=True, message="health check elsewhere")
    _git(work, "push", "-q", str(bare), "main")
    return ServiceRepo(
        clone_url=git_daemon.url_for(name),
        good=good,
        good_v2=good_v2,
        broken=broken,
        foreign_health=foreign_health,
    )


@pytest.fixture(scope="module")
async def deploy_database_url(
    postgres_server: PostgresServer, sshd_server: Sshd
) -> AsyncIterator[str]:
    """A migrated database whose inventory holds the local sshd, host key pinned."""
    name = f"test_deployer_{uuid.uuid4().hex}"
    url = postgres_server.create_database(name)
    upgrade(url)
    engine = make_engine(url, pool_size=2)
    async with make_sessionmaker(engine).begin() as session:
        session.add(
            Server(
                name=SERVER_NAME,
                host=sshd_server.host,
                ssh_port=sshd_server.port,
                ssh_user=sshd_server.user,
                host_key=sshd_server.known_hosts_line,
                state=ServerState.READY,
            )
        )
    await engine.dispose()
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(scope="module")
async def deploy_sessions(
    deploy_database_url: str,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(deploy_database_url, pool_size=5)
    yield make_sessionmaker(engine)
    await engine.dispose()


@dataclass(frozen=True)
class VaultSetup:
    project_id: uuid.UUID
    api_token: str = field(repr=False)
    private_key: str = field(repr=False)
    deployer: VaultClient

    @property
    def secret_values(self) -> list[str]:
        """Every secret value, split so a multi-line key is found line by line."""
        key_lines = [line for line in self.private_key.splitlines() if len(line) > 20]
        return [self.api_token, *key_lines]


@pytest.fixture(scope="module")
async def vault_setup(openbao: BootstrappedOpenBao, sshd_server: Sshd) -> VaultSetup:
    """The operator stores the server key and a project secret; the deployer logs in with its
    own least-privilege AppRole."""
    project_id = uuid.uuid4()
    api_token = "tok-" + secrets.token_urlsafe(24)
    operator = VaultClient(openbao.addr, token=openbao.root_token)
    await operator.write_secret(
        f"servers/{SERVER_NAME}", {"private_key": sshd_server.client_private_key}
    )
    await operator.write_secret(f"projects/{project_id}/API_TOKEN", {"value": api_token})
    credentials = openbao.credentials["deployer"]
    deployer = VaultClient(
        openbao.addr, role_id=credentials.role_id, secret_id=credentials.secret_id
    )
    await deployer.login()
    return VaultSetup(
        project_id=project_id,
        api_token=api_token,
        private_key=sshd_server.client_private_key,
        deployer=deployer,
    )


class SecretAudit:
    """Collects every place a secret value showed up where it must not.

    Run files: everything in the private data dir except `secrets/` (the 0600 input files), the
    runner's events (what `artifacts/run/job_events` and stdout are made of), and the argv of
    every process on the machine, sampled while deploys run.
    """

    def __init__(self, values: list[str]) -> None:
        self.values = values
        self.leaks: list[str] = []
        self.runs = 0
        self.events_seen = 0
        self.argv_samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _find(self, text: str, where: str) -> None:
        for value in self.values:
            if value in text:
                self.leaks.append(f"{where} contains a secret value")

    def before_cleanup(self, private_dir: Path, events: list[dict[str, Any]]) -> None:
        self.runs += 1
        if private_dir.stat().st_mode & 0o777 != 0o700:
            self.leaks.append(f"{private_dir} is not mode 0700")
        secrets_dir = private_dir / "secrets"
        for path in private_dir.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            if secrets_dir in path.parents:
                if path.stat().st_mode & 0o777 != 0o600:
                    self.leaks.append(f"{path} is not mode 0600")
                continue
            self._find(path.read_text(errors="replace"), str(path.relative_to(private_dir)))
        if not (private_dir / "artifacts" / "run" / "stdout").is_file():
            self.leaks.append("the audit found no runner stdout to scan")
        self.events_seen += len(events)
        for event in events:
            self._find(json.dumps(event), f"runner event {event.get('event')}")

    def _sample_argv(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    argv = (
                        (proc / "cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode(errors="replace")
                    )
                except OSError:
                    continue
                self._find(argv, f"argv of pid {proc.name}")
            self.argv_samples += 1
            self._stop.wait(0.05)

    def start_argv_sampling(self) -> None:
        self._thread = threading.Thread(target=self._sample_argv, daemon=True)
        self._thread.start()

    def stop_argv_sampling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@pytest.fixture(scope="module")
def secret_audit(vault_setup: VaultSetup) -> Iterator[SecretAudit]:
    audit = SecretAudit(vault_setup.secret_values)
    audit.start_argv_sampling()
    yield audit
    audit.stop_argv_sampling()


@pytest.fixture(scope="module")
def deploy_root(sshd_server: Sshd) -> Iterator[Path]:
    """A marked deploy root (the sshd fixture installed the deploy account); every project
    deployed under it is removed at the end, its processes and user included."""
    base = shared_dir("orch-test-srv-")
    root = prepare_deploy_root(base / "srv")
    yield root
    remove_projects(root)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ansible_runner(secret_audit: SecretAudit) -> AnsibleRunner:
    return AnsibleRunner(timeout_seconds=300, before_cleanup=secret_audit.before_cleanup)


def env_file_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def read_env_file(path: Path) -> dict[str, str]:
    """Parse the .env exactly as the release supervisor does."""
    parsed: dict[str, str] = _supervisor_module().parse_env_file(path)
    return parsed


def _supervisor_module() -> Any:
    import importlib.util

    script = (
        Path(__file__).resolve().parents[2]
        / "infra"
        / "ansible"
        / "roles"
        / "supervised_process"
        / "files"
        / "supervise.py"
    )
    spec = importlib.util.spec_from_file_location("supervise", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Deployer:
    """The deployer as its handler runs it: one transaction per request, real adapters."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        runner: AnsibleRunner,
        vault_setup: VaultSetup,
        deploy_root: Path,
        **config: Any,
    ) -> None:
        self.sessions = sessions
        self.runner = runner
        self.vault_setup = vault_setup
        self.config = DeployerConfig(
            deploy_root=str(deploy_root), health_timeout_seconds=6, heartbeat_seconds=1.0, **config
        )
        self.heartbeats = 0

    async def _heartbeat(self) -> None:
        self.heartbeats += 1

    async def deploy(self, deploy_request: DeployRequested) -> tuple[list[Event], float]:
        started = time.monotonic()
        async with self.sessions.begin() as session:
            service = DeployerService(
                self.runner,
                VaultSecretSource(self.vault_setup.deployer),
                SqlServerInventory(session),
                SqlDeploymentRecords(session),
                config=self.config,
            )
            events = await service.deploy(deploy_request, heartbeat=self._heartbeat)
        return events, time.monotonic() - started

    async def stop(self, stop_request: DeployStopRequested) -> list[Event]:
        async with self.sessions.begin() as session:
            service = DeployerService(
                self.runner,
                VaultSecretSource(self.vault_setup.deployer),
                SqlServerInventory(session),
                SqlDeploymentRecords(session),
                config=self.config,
            )
            return await service.stop(stop_request, heartbeat=self._heartbeat)

    async def restart(self, restart_request: DeployRestartRequested) -> list[Event]:
        async with self.sessions.begin() as session:
            service = DeployerService(
                self.runner,
                VaultSecretSource(self.vault_setup.deployer),
                SqlServerInventory(session),
                SqlDeploymentRecords(session),
                config=self.config,
            )
            return await service.restart(restart_request, heartbeat=self._heartbeat)

    async def record(self, commit: str) -> Deployment:
        async with self.sessions() as session:
            row = await session.scalar(
                select(Deployment).where(
                    Deployment.project_id == self.vault_setup.project_id,
                    Deployment.commit == commit,
                )
            )
        assert row is not None
        return row


@pytest.fixture(scope="module")
def deployer(
    deploy_sessions: async_sessionmaker[AsyncSession],
    ansible_runner: AnsibleRunner,
    vault_setup: VaultSetup,
    deploy_root: Path,
    git_daemon: GitDaemon,
) -> Deployer:
    return Deployer(
        deploy_sessions,
        ansible_runner,
        vault_setup,
        deploy_root,
        forge=ForgeSettings(daemon_url=git_daemon.base_url),
    )
