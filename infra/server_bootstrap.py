"""Bootstrap: make a registered server a deploy target and move it to `ready` (or say why not).

Run by `orchestrator servers bootstrap NAME`. It runs `infra/ansible/prepare_server.yml` over
SSH as a root-capable login (`root` unless told otherwise), with the server's pinned host key
and its private key from Vault (`servers/NAME`), through `infra.playbook_runner` (key in a 0600
file of a private run directory removed afterwards, never in extravars, argv or artifacts).
The deploy account is authorized with the public half of that same key, so the deployer logs
in with what Vault already holds. The playbook is idempotent: a second run reports 0 changes.

The server passes through `provisioning`; success makes it `ready`, a failure puts it back to
`new` with the failing task (or the SSH error) as its reason, so `servers list` says why.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.enums import ServerState
from infra.inventory import PRIVATE_KEY_FIELD, InventoryError, get_server
from infra.playbook_runner import PlaybookResult, PlaybookRun, ServerTarget, write_private_key
from infra.server_lifecycle import transition
from infra.stack.deploy_account import DEPLOY_USER
from infra.vault import server_secret_path

PLAYBOOK = "prepare_server.yml"
#: Longest a reason kept in `servers.state_reason` is (an Ansible message can be long).
MAX_REASON = 500


class Runner(Protocol):
    async def run(self, run: PlaybookRun) -> PlaybookResult: ...


class KeySource(Protocol):
    async def read_secret(self, path: str) -> Mapping[str, str]: ...


class BootstrapRefused(InventoryError):
    """The server cannot be bootstrapped as registered; the message says what to change."""


@dataclass(frozen=True)
class BootstrapOutcome:
    name: str
    ok: bool
    changed: int
    reason: str


@dataclass(frozen=True)
class BootstrapOptions:
    """What the playbook needs beyond the inventory row."""

    deploy_root: str = "/srv/orchestrator"
    login_user: str = "root"
    firewall_apply: bool = True
    firewall_file: str = "/etc/orchestrator/firewall.nft"


async def bootstrap_server(
    sessionmaker: async_sessionmaker[AsyncSession],
    keys: KeySource,
    runner: Runner,
    name: str,
    options: BootstrapOptions = BootstrapOptions(),
) -> BootstrapOutcome:
    """Prepare server `name` and move it to `ready`, or back to `new` with the reason."""
    server = await get_server(sessionmaker, name)
    if server.ssh_user != DEPLOY_USER:
        raise BootstrapRefused(
            f"server {name!r} is registered with SSH user {server.ssh_user!r}, but deploys log "
            f"in as {DEPLOY_USER!r} (the account bootstrap creates); re-add it with "
            f"`--user {DEPLOY_USER}`"
        )
    private_key = (await keys.read_secret(server_secret_path(name)))[PRIVATE_KEY_FIELD]
    public_key = await _public_key(private_key)
    async with sessionmaker.begin() as session:
        await transition(session, name, ServerState.PROVISIONING, "bootstrap running")
    run = PlaybookRun(
        playbook=PLAYBOOK,
        target=ServerTarget(
            name=name,
            host=server.host,
            ssh_port=server.ssh_port,
            ssh_user=options.login_user,
            host_key=server.host_key,
        ),
        extravars={
            "deploy_root": options.deploy_root,
            "deploy_user": DEPLOY_USER,
            "deploy_public_key": public_key,
            "ssh_port": server.ssh_port,
            "port_min": server.port_min,
            "port_max": server.port_max,
            "firewall_apply": options.firewall_apply,
            "firewall_file": options.firewall_file,
        },
        private_key=private_key,
        secrets={},
    )
    try:
        result = await runner.run(run)
    except Exception as exc:
        # It could not even start (ansible-playbook missing, no disk for the run directory).
        result = PlaybookResult(status="error", stats={}, failure=f"{type(exc).__name__}: {exc}")
    ok = result.status == "successful"
    if ok:
        reason = f"bootstrapped ({result.changed} change(s))"
    else:
        detail = result.unreachable or result.failure or f"ansible ended {result.status}"
        reason = f"bootstrap failed: {' '.join(detail.split())}"[:MAX_REASON]
    async with sessionmaker.begin() as session:
        await transition(session, name, ServerState.READY if ok else ServerState.NEW, reason=reason)
    return BootstrapOutcome(name=name, ok=ok, changed=result.changed, reason=reason)


async def _public_key(private_key: str) -> str:
    """The public half (`ssh-keygen -y`), from a 0600 file in a private directory."""
    directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="bootstrap-key-"))
    try:
        path = directory / "key"
        write_private_key(path, private_key)
        process = await asyncio.create_subprocess_exec(
            "ssh-keygen", "-y", "-f", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, _stderr = await process.communicate()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if process.returncode != 0:
        raise BootstrapRefused(
            "the private key in Vault cannot be read by ssh-keygen (is it passphrase-protected?); "
            "store an unencrypted key with `orchestrator servers remove` and `add`"
        )
    return stdout.decode().strip()
