"""`orchestrator servers add | list | bootstrap | drain | resume | retire | remove`: the inventory.

The command functions take their dependencies explicitly (a sessionmaker, a secret store, an
output function) so tests call them against real PostgreSQL and OpenBao; `handle` builds those
dependencies from the endpoints the CLI resolved (environment or the local stack). The
arguments are in `producers.cli.parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.enums import ServerState
from infra.inventory import (
    InvalidServer,
    InventoryError,
    NewServer,
    SecretStore,
    ServerInUse,
    ServerNotFound,
    ServerSummary,
    add_server,
    fingerprints,
    get_server,
    list_servers,
    parse_labels,
    parse_port_range,
    pin_host_key,
    remove_server,
    scan_host_key,
    set_deploy_slots,
)
from infra.playbook_runner import AnsibleRunner
from infra.server_bootstrap import BootstrapOptions, KeySource, Runner, bootstrap_server
from infra.server_lifecycle import TransitionRefused, transition
from infra.vault import VaultClient, VaultError
from producers.cli.database import database
from producers.cli.endpoints import Endpoints, resolve
from producers.cli.json_output import document
from producers.cli.tables import table_lines

Out = Callable[[str], None]

_TABLE_HEADER = ("NAME", "HOST", "STATE", "LABELS", "CAPACITY", "USED", "DEPLOYS", "PORTS")


async def add(
    sessionmaker: async_sessionmaker[AsyncSession],
    secrets: SecretStore,
    out: Out,
    *,
    name: str,
    host: str,
    key_file: Path,
    host_key: str | None = None,
    scan: bool = False,
    ssh_port: int = 22,
    user: str = "deploy",
    labels: str = "",
    capacity: int = 20,
    ports: str = "20000-20999",
    public_host: str = "",
    deploy_slots: int | None = None,
) -> int:
    """Register a server: private key to Vault, host key pinned (given or scanned once)."""
    if scan == (host_key is not None):
        raise InvalidServer('pin the host key with exactly one of --host-key "LINE" or --scan')
    try:
        private_key = await asyncio.to_thread(key_file.read_text)
    except OSError as exc:
        raise InvalidServer(f"cannot read the key file {key_file}: {exc.strerror}") from exc
    port_min, port_max = parse_port_range(ports)
    pinned = (
        pin_host_key(host_key, host, ssh_port)
        if host_key is not None
        else await scan_host_key(host, ssh_port)
    )
    server = NewServer(
        name=name,
        host=host,
        host_key=pinned,
        ssh_port=ssh_port,
        ssh_user=user,
        labels=parse_labels(labels),
        capacity=capacity,
        port_min=port_min,
        port_max=port_max,
        public_host=public_host,
        deploy_slots=deploy_slots,
    )
    added = await add_server(sessionmaker, secrets, server, private_key)
    out(f"added server {added.name} ({added.ssh_user}@{added.host}:{added.ssh_port}); "
        f"private key stored in Vault at servers/{added.name}")  # fmt: skip
    verb = "scanned" if scan else "given"
    out(f"pinned host key(s), {verb}; check them against the server's own "
        "`ssh-keygen -lf /etc/ssh/ssh_host_<type>_key.pub`:")  # fmt: skip
    for fingerprint in fingerprints(added.host_key):
        out(f"  {fingerprint}")
    return 0


async def show(
    sessionmaker: async_sessionmaker[AsyncSession], out: Out, *, as_json: bool = False
) -> int:
    """Print the inventory as a table (or a list of objects, with the pinned keys' fingerprints)."""
    servers = await list_servers(sessionmaker)
    if as_json:
        out(document([_server_object(s) for s in servers]))
        return 0
    if not servers:
        out("no servers registered: add one with "
            "`orchestrator servers add NAME --host HOST --key-file PATH --scan`")  # fmt: skip
        return 0
    for line in _table(servers):
        out(line)
    return 0


async def remove(
    sessionmaker: async_sessionmaker[AsyncSession],
    secrets: SecretStore,
    out: Out,
    *,
    name: str,
    force: bool = False,
) -> int:
    """Unregister a server and delete its key; refused while ports are allocated unless forced."""
    removed = await remove_server(sessionmaker, secrets, name, force=force)
    dropped = f", {removed.used_ports} allocation(s) dropped" if removed.used_ports else ""
    out(f"removed server {removed.name} and its key in Vault{dropped}")
    return 0


async def bootstrap(
    sessionmaker: async_sessionmaker[AsyncSession],
    keys: KeySource,
    runner: Runner,
    out: Out,
    *,
    name: str,
    options: BootstrapOptions,
) -> int:
    """Prepare a server with Ansible; ready on success, else one line on stderr and exit 1."""
    outcome = await bootstrap_server(sessionmaker, keys, runner, name, options)
    if not outcome.ok:
        print(f"orchestrator servers bootstrap: {name} is new again, {outcome.reason}",
              file=sys.stderr)  # fmt: skip
        return 1
    out(f"server {name} is ready: {outcome.reason}")
    return 0


#: The operator's own moves; the lifecycle table (`infra.server_lifecycle`) decides if allowed.
_MOVES = {
    "drain": ServerState.DRAINING,
    "resume": ServerState.READY,
    "retire": ServerState.RETIRED,
}


async def move(sessionmaker: async_sessionmaker[AsyncSession], out: Out, *, action: str,
               name: str) -> int:  # fmt: skip
    """Drain, resume or retire a server; retiring is refused while projects hold ports there."""
    after = _MOVES[action]
    async with sessionmaker.begin() as session:
        if after is ServerState.RETIRED:
            used = (await get_server(sessionmaker, name)).used_ports
            if used:
                raise ServerInUse(
                    f"server {name!r} still has {used} allocated port(s); drain it "
                    f"(`orchestrator servers drain {name}`) and archive those projects first"
                )
        try:
            moved = await transition(session, name, after, reason=f"operator: servers {action}")
        except LookupError as exc:
            raise ServerNotFound(str(exc)) from exc
    out(f"server {name} is {moved.after} (was {moved.before})")
    return 0


async def set_slots(
    sessionmaker: async_sessionmaker[AsyncSession], out: Out, *, name: str, slots: int | None
) -> int:
    """Change how many deploys the server takes at once."""
    changed = await set_deploy_slots(sessionmaker, name, slots)
    limit = "no limit of its own" if slots is None else f"{slots} deploy(s) at once"
    out(f"server {changed.name} takes {limit}")
    return 0


def _server_object(s: ServerSummary) -> dict[str, object]:
    return {
        "name": s.name,
        "host": s.host,
        "ssh_port": s.ssh_port,
        "ssh_user": s.ssh_user,
        "public_host": s.public_host,
        "labels": list(s.labels),
        "capacity": s.capacity,
        "used_ports": s.used_ports,
        "deploy_slots": s.deploy_slots,
        "port_min": s.port_min,
        "port_max": s.port_max,
        "state": s.state,
        "state_reason": s.state_reason,
        "host_key_fingerprints": fingerprints(s.host_key),
    }


def _table(servers: list[ServerSummary]) -> list[str]:
    rows = [
        (
            s.name,
            s.host if s.ssh_port == 22 else f"{s.host}:{s.ssh_port}",
            s.state,
            ",".join(s.labels) or "-",
            str(s.capacity),
            str(s.used_ports),
            "-" if s.deploy_slots is None else str(s.deploy_slots),
            f"{s.port_min}-{s.port_max}",
        )
        for s in servers
    ]
    return table_lines(_TABLE_HEADER, rows, right=(4, 5, 6))


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`: resolve endpoints, run, report errors."""
    try:
        return asyncio.run(run(args, resolve(args.state_dir)))
    except (InventoryError, VaultError, TransitionRefused) as exc:
        print(f"orchestrator servers {args.servers_command}: {exc}", file=sys.stderr)
        return 1


async def run(args: argparse.Namespace, endpoints: Endpoints) -> int:
    """Build the dependencies one action needs and run it."""
    out: Out = print
    async with database(endpoints) as sessionmaker:
        if args.servers_command == "list":
            return await show(sessionmaker, out, as_json=args.json)
        if args.servers_command in _MOVES:
            return await move(sessionmaker, out, action=args.servers_command, name=args.name)
        if args.servers_command == "set":
            return await set_slots(sessionmaker, out, name=args.name, slots=args.deploy_slots)
        vault = VaultClient(endpoints.vault_addr, token=endpoints.vault_token)
        if args.servers_command == "remove":
            return await remove(sessionmaker, vault, out, name=args.name, force=args.force)
        if args.servers_command == "bootstrap":
            options = BootstrapOptions(
                deploy_root=args.deploy_root,
                login_user=args.login,
                firewall_apply=args.firewall_apply,
                firewall_file=args.firewall_file,
            )
            return await bootstrap(
                sessionmaker, vault, AnsibleRunner(), out, name=args.name, options=options
            )
        return await add(
            sessionmaker, vault, out,
            name=args.name, host=args.host, key_file=args.key_file, host_key=args.host_key,
            scan=args.scan, ssh_port=args.ssh_port, user=args.user, labels=args.labels,
            capacity=args.capacity, ports=args.ports, public_host=args.public_host,
            deploy_slots=args.deploy_slots,
        )  # fmt: skip
