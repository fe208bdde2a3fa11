"""Deployed projects are isolated from each other and from the platform, over real SSH.

Two projects go to the local sshd target through the real deployer and Ansible: each must run
as its own system user, own its 0600 `.env`, and be unable to read the other's. The SSH login
is the dedicated deploy account, which can act as project users but never as root. Archiving
one project kills its processes and removes it before its port counts as free; malformed input
is refused before the playbook builds any path from it.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from consumers.deployer.ports import PlaybookRun, ServerTarget
from contracts.events import DeployFailed, DeployStopped, DeployStopRequested, DeploySucceeded
from infra.playbook_runner import AnsibleRunner
from infra.stack.deploy_account import DEPLOY_USER, VENV_CACHE_DIR
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.sshd_server import Sshd
from infra.vault import SecretNotFound, VaultClient

from .conftest import Deployer, ServiceRepo, VaultSetup, project_processes, service_port
from .test_process_deploy import get_json, request, spec

TENANTS = {"tenant-a": service_port(), "tenant-b": service_port()}


def user_of(slug: str) -> str:
    return f"orch-p-{slug}"


def env_of(deploy_root: Path, slug: str, repo: ServiceRepo) -> Path:
    return deploy_root / slug / "releases" / repo.good[:12] / ".env"


def processes_under(root: Path) -> dict[int, int]:
    """pid -> real uid of every process whose working directory is inside `root`."""
    found: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = (proc / "cwd").resolve(strict=True)
            status = (proc / "status").read_text()
        except OSError:
            continue
        if cwd == root or root in cwd.parents:
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            found[int(proc.name)] = int(uid_line.split()[1])
    return found


def run_as(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", *argv], capture_output=True, text=True, check=False
    )


def ssh_as(
    sshd: Sshd, user: str, tmp_path: Path, *command: str
) -> subprocess.CompletedProcess[str]:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line + "\n")
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-i", str(sshd.client_key_path), "-p", str(sshd.port),
         f"{user}@{sshd.host}", *command],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_each_project_runs_as_its_own_user(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    for slug, port in TENANTS.items():
        events, seconds = await deployer.deploy(
            request(
                vault_setup, service_repo, service_repo.good, project_spec=spec(slug), port=port
            )
        )
        print(f"deploy of {slug} took {seconds:.1f}s")
        assert [type(e) for e in events] == [DeploySucceeded], events
        assert get_json("/health", port)[0] == 200

    for slug in TENANTS:
        account = pwd.getpwnam(user_of(slug))
        assert account.pw_shell == "/usr/sbin/nologin"
        assert account.pw_dir == str(deploy_root / slug)
        running = processes_under(deploy_root / slug)
        # The supervisor and the service, and nothing of them as root or as another user.
        assert len(running) >= 2, running
        assert set(running.values()) == {account.pw_uid}, running
        supervisor = int((deploy_root / slug / "run" / "supervisor.pid").read_text())
        assert running[supervisor] == account.pw_uid
        env = env_of(deploy_root, slug, service_repo)
        assert (env.stat().st_mode & 0o777, env.owner()) == (0o600, user_of(slug))
        assert (deploy_root / slug).stat().st_mode & 0o777 == 0o750

    own = run_as(user_of("tenant-a"), "cat", str(env_of(deploy_root, "tenant-a", service_repo)))
    assert own.returncode == 0 and "API_TOKEN=" in own.stdout
    other = run_as(user_of("tenant-a"), "cat", str(env_of(deploy_root, "tenant-b", service_repo)))
    assert other.returncode != 0
    assert "Permission denied" in other.stderr
    assert vault_setup.api_token not in other.stdout


async def test_projects_share_a_venv_neither_can_change(
    service_repo: ServiceRepo, deploy_root: Path
) -> None:
    """Both tenants (same requirements) run from one venv the deploy account built; a project's
    user can run it but cannot plant code in it for the other project."""
    links = [deploy_root / slug / "releases" / service_repo.good[:12] / ".venv" for slug in TENANTS]
    assert all(link.is_symlink() for link in links), links
    (shared,) = {link.resolve() for link in links}
    assert shared.parent == VENV_CACHE_DIR
    assert shared.owner() == DEPLOY_USER
    assert (shared / ".complete").is_file()
    site_packages = next(shared.glob("lib/python3*/site-packages"))
    for directory in (shared, shared / "bin", site_packages):
        planted = run_as(user_of("tenant-a"), "touch", str(directory / "planted.py"))
        assert planted.returncode != 0, directory
        assert "Permission denied" in planted.stderr
    listing = run_as(user_of("tenant-a"), "ls", str(VENV_CACHE_DIR))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    runs = run_as(user_of("tenant-b"), str(links[1] / "bin" / "python"), "-c", "print('ok')")
    assert (runs.returncode, runs.stdout.strip()) == (0, "ok"), runs.stderr


async def test_the_ssh_login_is_the_dedicated_deploy_account(
    sshd_server: Sshd, deploy_root: Path, service_repo: ServiceRepo, tmp_path: Path
) -> None:
    assert sshd_server.user == DEPLOY_USER
    assert ssh_as(sshd_server, DEPLOY_USER, tmp_path, "id", "-un").stdout.strip() == DEPLOY_USER
    root_login = ssh_as(sshd_server, "root", tmp_path, "true")
    assert root_login.returncode == 255 and "Permission denied" in root_login.stderr

    # Its sudo rule: a project's user, yes; root or a project's secrets directly, no.
    as_project = ssh_as(
        sshd_server, DEPLOY_USER, tmp_path, "sudo", "-n", "-u", user_of("tenant-a"), "id", "-un"
    )
    assert as_project.stdout.strip() == user_of("tenant-a"), as_project.stderr
    assert ssh_as(sshd_server, DEPLOY_USER, tmp_path, "sudo", "-n", "true").returncode != 0
    env_b = env_of(deploy_root, "tenant-b", service_repo)
    assert ssh_as(sshd_server, DEPLOY_USER, tmp_path, "cat", str(env_b)).returncode != 0
    assert (
        ssh_as(sshd_server, DEPLOY_USER, tmp_path, "sudo", "-n", "cat", str(env_b)).returncode != 0
    )
    check = subprocess.run(
        ["visudo", "-cf", "/etc/sudoers.d/orch-deploy"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout


async def test_archive_stops_the_service_before_the_port_is_free(
    deployer: Deployer, vault_setup: VaultSetup, deploy_root: Path, openbao: BootstrappedOpenBao
) -> None:
    slug, port = "tenant-b", TENANTS["tenant-b"]
    assert project_processes(user_of(slug))
    assert list((deploy_root / slug / "releases").iterdir())
    # The archived project's own secrets (the module's shared project keeps its own).
    archived_id = uuid.uuid4()
    operator = VaultClient(openbao.addr, token=openbao.root_token)
    for name in ("TELEGRAM_BOT_TOKEN", "API_TOKEN"):
        await operator.write_secret(f"projects/{archived_id}/{name}", {"value": "v-" + name})
    stop = DeployStopRequested(
        correlation_id=uuid.uuid4(), actor="coordinator", project_id=archived_id,
        slug=slug, server_name="local", host="127.0.0.1", port=port,
    )  # fmt: skip

    events = await deployer.stop(stop)

    assert [type(e) for e in events] == [DeployStopped], events
    assert isinstance(events[0], DeployStopped)
    assert events[0].port == port
    assert "secrets deleted from Vault: API_TOKEN, TELEGRAM_BOT_TOKEN" in events[0].detail
    # Every version is gone, not only the latest: nothing is listed, nothing can be read back.
    assert await operator.list_secrets(f"projects/{archived_id}") == []
    with pytest.raises(SecretNotFound):
        await operator.read_secret(f"projects/{archived_id}/API_TOKEN")
    assert await operator.list_secrets(f"projects/{vault_setup.project_id}") == ["API_TOKEN"]
    with pytest.raises(KeyError):
        pwd.getpwnam(user_of(slug))
    assert processes_under(deploy_root / slug) == {}
    assert not (deploy_root / slug).exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # The port can go to the next project: something else can listen on it at once (as any
    # server does, past the closed connections' TIME_WAIT; a live listener would still refuse).
    with socket.socket() as reuse:
        reuse.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reuse.bind(("127.0.0.1", port))
        reuse.listen()
    # The other project is untouched, and a repeated stop (a redelivery) converges.
    assert get_json("/health", TENANTS["tenant-a"])[0] == 200
    again = await deployer.stop(stop)
    assert [type(e) for e in again] == [DeployStopped]


async def test_a_health_path_naming_another_host_is_refused(
    deployer: Deployer, service_repo: ServiceRepo, vault_setup: VaultSetup, deploy_root: Path
) -> None:
    slug, port = "tenant-h", service_port()
    events, _ = await deployer.deploy(
        request(
            vault_setup,
            service_repo,
            service_repo.foreign_health,
            project_spec=spec(slug),
            port=port,
        )
    )

    assert [type(e) for e in events] == [DeployFailed], events
    assert isinstance(events[0], DeployFailed)
    assert "health_path must be a plain absolute path" in events[0].reason
    # Refused before the service started: nothing of it runs, nothing listens.
    assert processes_under(deploy_root / slug) == {}
    assert not (deploy_root / slug / "current").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize(
    ("slug", "commit"),
    [
        ("tenant-c", "../../../../etc/cron.d"),
        ("tenant-c", "abc123"),
        ("../../etc", "0" * 40),
        ("Tenant C", "0" * 40),
    ],
)
async def test_malformed_commit_or_slug_is_refused_before_any_path(
    sshd_server: Sshd, vault_setup: VaultSetup, deploy_root: Path, slug: str, commit: str
) -> None:
    """A forged request reaching the playbook directly: refused before the server is touched."""
    before = sorted(os.listdir(deploy_root))
    target = ServerTarget(
        name="local", host=sshd_server.host, ssh_port=sshd_server.port,
        ssh_user=sshd_server.user, host_key=sshd_server.known_hosts_line,
    )  # fmt: skip
    result = await AnsibleRunner(timeout_seconds=120).run(
        PlaybookRun(
            playbook="deploy_process.yml",
            target=target,
            extravars={
                "slug": slug,
                "commit": commit,
                "clone_url": "git://127.0.0.1:9/x.git",
                "port": service_port(),
                "bind_host": "127.0.0.1",
                "health_host": "127.0.0.1",
                "deploy_root": str(deploy_root),
                "missing_secrets": [],
                "missing_secret_hints": {},
            },
            private_key=vault_setup.private_key,
            secrets={"env_file": ""},
        )
    )

    assert result.status == "failed"
    assert "refused before touching the server" in result.failure
    assert sorted(os.listdir(deploy_root)) == before
    with pytest.raises(KeyError):
        pwd.getpwnam(user_of("tenant-c"))
