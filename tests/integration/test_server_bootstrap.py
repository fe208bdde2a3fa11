"""`orchestrator servers bootstrap`, run as an operator runs it: a subprocess against real
PostgreSQL and OpenBao, Ansible over real SSH to a throwaway sshd that admits root (the fresh
host). The second run must change nothing; a host that does not answer leaves the server `new`
with the reason; the firewall table is rendered and checked with `nft -c`, never loaded here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.stack.deploy_account import DEPLOY_HOME, SHARED_DEPLOY_BASE
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.stack.sshd_server import Sshd
from tests.integration.test_cli_json import PRIVATE_KEY, host_key_line
from tests.integration.test_coordinator import sql_exec

ROOT = Path(__file__).resolve().parents[2]
#: docker-compose's `register-target` one-shot (runs in the app image, as root).
REGISTER_TARGET = ROOT / "infra" / "docker" / "deploy-target" / "register.sh"


@dataclass(frozen=True)
class Operator:
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", "servers", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    def servers(self) -> dict[str, Any]:
        done = self.cli("list", "--json")
        assert done.returncode == 0, done.stderr
        return {server["name"]: server for server in json.loads(done.stdout)}


@pytest.fixture
def fresh_host(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd of the test's own that admits root with its client key, like a new VM."""
    with Sshd(tmp_path / "sshd", admit_root=True) as server:
        yield server


@pytest.fixture
def deploy_root() -> Iterator[Path]:
    """A deploy root of this test's own, and the deploy account's keys restored afterwards."""
    root = SHARED_DEPLOY_BASE / f"bootstrap-test-{uuid.uuid4().hex[:8]}"
    ssh_dir = DEPLOY_HOME / ".ssh"
    had_ssh_dir = ssh_dir.exists()
    yield root
    shutil.rmtree(root, ignore_errors=True)
    if not had_ssh_dir:
        shutil.rmtree(ssh_dir, ignore_errors=True)


@pytest.fixture
def operator(migrated_db: str, openbao: BootstrappedOpenBao) -> Operator:
    return Operator(
        {
            **os.environ,
            "ORCH_NATS__URL": "nats://127.0.0.1:1",  # never dialled by `servers`
            "ORCH_DATABASE__URL": migrated_db,
            "ORCH_VAULT__ADDR": openbao.addr,
            "ORCH_VAULT__TOKEN": openbao.root_token,
        }
    )


def test_bootstrap_prepares_a_fresh_host_once_and_then_changes_nothing(
    operator: Operator, fresh_host: Sshd, deploy_root: Path, tmp_path: Path
) -> None:
    firewall = tmp_path / "firewall.nft"
    added = operator.cli(
        "add", "fresh-1", "--host", fresh_host.host, "--ssh-port", str(fresh_host.port),
        "--user", "orch-deploy", "--key-file", str(fresh_host.client_key_path),
        "--host-key", fresh_host.known_hosts_line, "--ports", "21000-21099",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert operator.servers()["fresh-1"]["state"] == "new"

    bootstrap = (
        "bootstrap", "fresh-1", "--deploy-root", str(deploy_root),
        "--firewall-file", str(firewall), "--no-firewall-apply",
    )  # fmt: skip
    first = operator.cli(*bootstrap)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("server fresh-1 is ready: bootstrapped (")
    assert "(0 change(s))" not in first.stdout  # the deploy root and the table were new
    second = operator.cli(*bootstrap)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "server fresh-1 is ready: bootstrapped (0 change(s))"

    server = operator.servers()["fresh-1"]
    assert (server["state"], server["state_reason"]) == ("ready", "bootstrapped (0 change(s))")
    private_key = fresh_host.client_private_key.splitlines()[1]
    for output in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert private_key not in output
    # What a deploy needs: the marked deploy root and the deploy account's key.
    assert (deploy_root / ".orchestrator-deploy-root").is_file()
    authorized = (DEPLOY_HOME / ".ssh" / "authorized_keys").read_text().split()
    public = fresh_host.client_key_path.with_suffix(".pub").read_text().split()
    assert authorized[:2] == public[:2]
    # The firewall table: SSH and the server's port range, checked by nft itself.
    rules = firewall.read_text()
    assert "table inet orchestrator {" in rules
    assert f"tcp dport {fresh_host.port} accept" in rules
    assert "tcp dport 21000-21099 accept" in rules
    assert "policy drop;" in rules
    checked = subprocess.run(["nft", "-c", "-f", str(firewall)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_a_host_that_does_not_answer_stays_new_and_says_why(
    operator: Operator, fresh_host: Sshd, deploy_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    key_line = fresh_host.known_hosts_line.split(maxsplit=1)[1]
    added = operator.cli(
        "add", "gone-1", "--host", "127.0.0.1", "--ssh-port", str(port), "--user",
        "orch-deploy", "--key-file", str(fresh_host.client_key_path), "--host-key", key_line,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    failed = operator.cli(
        "bootstrap", "gone-1", "--deploy-root", str(deploy_root),
        "--firewall-file", str(tmp_path / "fw.nft"), "--no-firewall-apply",
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stdout == ""
    (line,) = failed.stderr.splitlines()
    assert line.startswith("orchestrator servers bootstrap: gone-1 is new again, bootstrap failed")
    server = operator.servers()["gone-1"]
    assert server["state"] == "new"
    assert server["state_reason"].startswith("bootstrap failed")


def test_bootstrap_refuses_a_server_whose_login_is_not_the_deploy_account(
    operator: Operator, fresh_host: Sshd
) -> None:
    added = operator.cli(
        "add", "odd-1", "--host", fresh_host.host, "--ssh-port", str(fresh_host.port),
        "--key-file", str(fresh_host.client_key_path), "--host-key",
        fresh_host.known_hosts_line,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    refused = operator.cli("bootstrap", "odd-1")
    assert refused.returncode == 1
    assert "re-add it with `--user orch-deploy`" in refused.stderr
    assert operator.servers()["odd-1"]["state"] == "new"


def test_operators_drain_resume_and_retire_within_the_lifecycle(
    operator: Operator, migrated_db: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(PRIVATE_KEY)
    added = operator.cli(
        "add", "edge-9", "--host", "10.0.0.9", "--user", "orch-deploy",
        "--key-file", str(key_file), "--host-key", f"10.0.0.9 {host_key_line()}",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    refused = operator.cli("drain", "edge-9")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "orchestrator servers drain: server 'edge-9' is new and cannot become draining; "
        "from new it may become provisioning, retired"
    )
    sql_exec(migrated_db, "UPDATE servers SET state = 'ready' WHERE name = 'edge-9'")
    for action, line in (
        ("drain", "server edge-9 is draining (was ready)"),
        ("resume", "server edge-9 is ready (was draining)"),
        ("retire", "server edge-9 is retired (was ready)"),
    ):
        done = operator.cli(action, "edge-9")
        assert (done.returncode, done.stdout.strip()) == (0, line), done.stderr
    server = operator.servers()["edge-9"]
    assert (server["state"], server["state_reason"]) == ("retired", "operator: servers retire")
    final = operator.cli("resume", "edge-9")
    assert final.returncode == 1
    assert "may become nothing (it is final)" in final.stderr
    missing = operator.cli("drain", "nowhere")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "orchestrator servers drain: no server named 'nowhere'; "
        "`orchestrator servers list` shows them",
    )


def test_compose_register_target_adds_the_server_once_and_bootstraps_it(
    operator: Operator,
    openbao: BootstrappedOpenBao,
    fresh_host: Sshd,
    deploy_root: Path,
    tmp_path: Path,
) -> None:
    # The throwaway sshd keeps root's authorized keys and its public host key in its data dir,
    # as the compose target does in the volume it shares with register-target.
    shared = fresh_host.data_dir
    assert fresh_host.host_key_path.with_suffix(".pub") == shared / "ssh_host_ed25519_key.pub"
    init_file = tmp_path / "init.json"
    init_file.write_text(json.dumps({"unseal_key": "-", "root_token": openbao.root_token}))
    env = {k: v for k, v in operator.env.items() if k != "ORCH_VAULT__TOKEN"}
    env |= {
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
        "DEPLOY_TARGET_HOST": fresh_host.host,
        "DEPLOY_TARGET_SSH_PORT": str(fresh_host.port),
        "DEPLOY_TARGET_KEYS": str(shared),
        "OPENBAO_INIT_FILE": str(init_file),
    }
    argv = [
        "sh", str(REGISTER_TARGET), "--deploy-root", str(deploy_root),
        "--firewall-file", str(tmp_path / "fw.nft"), "--no-firewall-apply",
    ]  # fmt: skip

    def register() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
        )

    first = register()
    assert first.returncode == 0, first.stderr
    assert "added server deploy-target (orch-deploy@" in first.stdout
    assert "server deploy-target is ready: bootstrapped (" in first.stdout
    authorized = (shared / "authorized_keys").read_text()
    assert (
        authorized.split()[:2]
        != (fresh_host.client_key_path.with_suffix(".pub").read_text().split()[:2])
    )  # a key pair of its own, whose private half only Vault keeps
    server = operator.servers()["deploy-target"]
    assert server["state"] == "ready"
    assert (server["host"], server["ssh_port"]) == (fresh_host.host, fresh_host.port)
    assert (server["port_min"], server["port_max"]) == (20000, 20019)
    pinned = subprocess.run(
        ["ssh-keygen", "-lf", str(fresh_host.host_key_path.with_suffix(".pub"))],
        capture_output=True, text=True, check=True,
    ).stdout.split()[1]  # fmt: skip
    assert [f.split()[0] for f in server["host_key_fingerprints"]] == [pinned]

    for output in (first.stdout, first.stderr):
        assert "PRIVATE KEY" not in output

    # Registered already: it never adds again (nor makes a new key); a target whose authorized
    # key was lost says how to start over instead of bootstrapping with a key it no longer has.
    (shared / "authorized_keys").unlink()
    lost = register()
    assert lost.returncode == 1
    assert "added server" not in lost.stdout
    assert "deploy-target is registered but its authorized key is gone" in lost.stderr
    assert (
        operator.servers()["deploy-target"]["host_key_fingerprints"]
        == (server["host_key_fingerprints"])
    )
