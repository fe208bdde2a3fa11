"""The server inventory: where projects may be deployed and how to reach them safely.

Used by `orchestrator servers ...` and by the local stack's bootstrap. Two rules shape it:
the SSH private key goes to Vault (`servers/<name>`, key `private_key`) and never into the
database, and every server's host key is pinned at registration, so the deployer's SSH never
trusts a key on first use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import PortAllocation, Server, ServerState
from infra.vault import server_secret_path

#: Field of the Vault secret at `servers/<name>` that holds the OpenSSH private key.
PRIVATE_KEY_FIELD = "private_key"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9._:-]{1,255}$")
_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-sha2-|sk-)[a-z0-9@.-]+$")


class SecretStore(Protocol):
    """The part of `infra.vault.VaultClient` the inventory uses."""

    async def write_secret(self, path: str, data: Mapping[str, str]) -> None: ...

    async def delete_secret(self, path: str) -> None: ...


class InventoryError(Exception):
    """A request the inventory refuses; the message tells the operator what to do instead."""


class InvalidServer(InventoryError):
    """A field of a server registration is malformed."""


class ServerExists(InventoryError):
    """A server with this name is already registered."""


class ServerNotFound(InventoryError):
    """No server has this name."""


class ServerInUse(InventoryError):
    """Removing the server would orphan projects that run on it."""


class HostKeyScanFailed(InventoryError):
    """`ssh-keyscan` could not fetch a host key."""


@dataclass(frozen=True)
class NewServer:
    """A server to register; `host_key` is known_hosts text (see `pin_host_key`)."""

    name: str
    host: str
    host_key: str
    ssh_port: int = 22
    ssh_user: str = "deploy"
    labels: tuple[str, ...] = ()
    capacity: int = 20
    port_min: int = 20000
    port_max: int = 20999
    public_host: str = ""
    #: Deploys at once on this server; None: no limit but the deployer's concurrency.
    deploy_slots: int | None = None

    def validate(self) -> None:
        """Raise `InvalidServer` naming the first bad field."""
        if not _NAME.match(self.name):
            raise InvalidServer(
                f"server name {self.name!r} must be 1-63 lowercase letters, digits, '.', '_' "
                "or '-', starting with a letter or digit (it is part of a Vault path)"
            )
        for field, value in (("host", self.host), ("public host", self.public_host)):
            if value and not _HOST.match(value):
                raise InvalidServer(f"{field} {value!r} is not a host name or IP address")
        if not self.host:
            raise InvalidServer("a server needs --host (the address SSH connects to)")
        if not re.match(r"^[a-z_][a-z0-9_.-]{0,31}$", self.ssh_user):
            raise InvalidServer(f"SSH user {self.ssh_user!r} is not a valid login name")
        for label in self.labels:
            if not _LABEL.match(label):
                raise InvalidServer(
                    f"label {label!r} must be letters, digits, '.', '_' or '-' (at most 63)"
                )
        for field, port in (("SSH port", self.ssh_port), ("port range start", self.port_min),
                            ("port range end", self.port_max)):  # fmt: skip
            if not 1 <= port <= 65535:
                raise InvalidServer(f"{field} {port} is outside 1-65535")
        if self.port_min > self.port_max:
            raise InvalidServer(
                f"port range {self.port_min}-{self.port_max} is empty: write it as LOW-HIGH"
            )
        check_deploy_slots(self.deploy_slots)
        size = self.port_max - self.port_min + 1
        if not 1 <= self.capacity <= size:
            raise InvalidServer(
                f"capacity {self.capacity} must be between 1 and the {size} ports of "
                f"{self.port_min}-{self.port_max}"
            )


#: More deploys at once than this on one server is a typo, not a plan.
MAX_DEPLOY_SLOTS = 64


def check_deploy_slots(slots: int | None) -> None:
    """Raise `InvalidServer` unless `slots` is None (no limit) or 1 to `MAX_DEPLOY_SLOTS`."""
    if slots is not None and not 1 <= slots <= MAX_DEPLOY_SLOTS:
        raise InvalidServer(
            f"deploy slots {slots} must be between 1 and {MAX_DEPLOY_SLOTS} "
            "(or none: no limit but the deployer's concurrency)"
        )


@dataclass(frozen=True)
class ServerSummary:
    """One inventory row as an operator sees it (never anything secret)."""

    name: str
    host: str
    ssh_port: int
    ssh_user: str
    labels: tuple[str, ...]
    capacity: int
    deploy_slots: int | None
    used_ports: int
    port_min: int
    port_max: int
    public_host: str
    state: ServerState
    #: Why it is in that state (the failed bootstrap step, the failing health check), or "".
    state_reason: str
    host_key: str


def host_pattern(host: str, ssh_port: int) -> str:
    """How known_hosts names `host` on `ssh_port` (brackets only for a non-default port)."""
    return host if ssh_port == 22 else f"[{host}]:{ssh_port}"


def pin_host_key(text: str, host: str, ssh_port: int) -> str:
    """known_hosts lines for `host:ssh_port` from `ssh-keyscan` output or pasted lines.

    Each line may be `KEYTYPE BASE64` or `HOSTS KEYTYPE BASE64 [comment]`; the host field is
    replaced by this server's address, because the operator is pinning *this* server's key
    (and a hashed or differently written host would never match when the deployer connects).
    """
    lines = []
    for raw in text.splitlines():
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        if not _KEY_TYPE.match(fields[0]):
            fields = fields[1:]
        if len(fields) < 2 or not _KEY_TYPE.match(fields[0]):
            raise InvalidServer(
                f"host key line {raw.strip()!r} is not `[HOST]:PORT KEYTYPE BASE64` "
                "(as printed by `ssh-keyscan -p PORT HOST`)"
            )
        key_type, body = fields[0], fields[1]
        _check_key_blob(key_type, body)
        lines.append(f"{host_pattern(host, ssh_port)} {key_type} {body}")
    if not lines:
        raise InvalidServer('no host key given: pass --host-key "LINE" or --scan')
    return "\n".join(lines)


def fingerprints(known_hosts: str) -> list[str]:
    """`SHA256:... (KEYTYPE)` per line, as `ssh-keygen -l` prints them, for a person to verify."""
    result = []
    for line in known_hosts.splitlines():
        _, key_type, body = line.split()[:3]
        digest = hashlib.sha256(base64.b64decode(body)).digest()
        result.append(f"SHA256:{base64.b64encode(digest).decode().rstrip('=')} ({key_type})")
    return result


def _check_key_blob(key_type: str, body: str) -> None:
    """The base64 must decode to an SSH public key blob that names the same key type."""
    try:
        blob = base64.b64decode(body, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        embedded = ""
    if embedded != key_type:
        raise InvalidServer(f"host key of type {key_type} has a damaged or mismatched key body")


def check_private_key(private_key: str) -> None:
    """Refuse text that is plainly not a private key before it reaches Vault."""
    text = private_key.strip()
    if not (text.startswith("-----BEGIN ") and text.endswith("PRIVATE KEY-----")):
        raise InvalidServer(
            "the key file does not hold a PEM/OpenSSH private key "
            "(expected '-----BEGIN ... PRIVATE KEY-----'); pass the private half, not the .pub"
        )


async def scan_host_key(host: str, ssh_port: int = 22, *, scan_seconds: int = 10) -> str:
    """Fetch the host keys once with `ssh-keyscan` and return them pinned to `host:ssh_port`.

    Trust is established here, by the operator who verifies the printed fingerprints; from
    then on the deployer connects with strict host key checking against the stored lines.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            "ssh-keyscan", "-p", str(ssh_port), "-T", str(scan_seconds), host,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise HostKeyScanFailed(
            "ssh-keyscan is not installed (apt-get install openssh-client); "
            'or pass the key with --host-key "LINE"'
        ) from exc
    try:
        # ssh-keyscan's own -T bounds each connection; this bounds a hung resolver too.
        async with asyncio.timeout(scan_seconds + 5):
            stdout, stderr = await process.communicate()
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise HostKeyScanFailed(f"ssh-keyscan {host}:{ssh_port} did not finish in time") from exc
    output = stdout.decode(errors="replace")
    if not any(line.strip() and not line.startswith("#") for line in output.splitlines()):
        detail = stderr.decode(errors="replace").strip().splitlines()
        raise HostKeyScanFailed(
            f"ssh-keyscan found no host key at {host}:{ssh_port} "
            f"({detail[-1] if detail else 'no answer'}): is sshd listening there?"
        )
    return pin_host_key(output, host, ssh_port)


async def add_server(
    sessionmaker: async_sessionmaker[AsyncSession],
    secrets: SecretStore,
    server: NewServer,
    private_key: str,
) -> ServerSummary:
    """Register `server` and store its private key in Vault.

    The row is inserted first and committed only after Vault accepted the key, so a failed
    Vault write leaves no half-registered server, and a duplicate name is refused before
    the existing server's key could be overwritten.
    """
    server.validate()
    check_private_key(private_key)
    host_key = pin_host_key(server.host_key, server.host, server.ssh_port)
    async with sessionmaker() as session, session.begin():
        session.add(
            Server(
                name=server.name,
                host=server.host,
                ssh_port=server.ssh_port,
                ssh_user=server.ssh_user,
                host_key=host_key,
                labels=list(server.labels),
                capacity=server.capacity,
                deploy_slots=server.deploy_slots,
                port_min=server.port_min,
                port_max=server.port_max,
                public_host=server.public_host,
                state=ServerState.NEW,
            )
        )
        try:
            await session.flush()
        except IntegrityError as exc:
            raise ServerExists(
                f"a server named {server.name!r} is already registered; remove it first "
                f"(`orchestrator servers remove {server.name}`) or choose another name"
            ) from exc
        await secrets.write_secret(
            server_secret_path(server.name), {PRIVATE_KEY_FIELD: private_key}
        )
    return ServerSummary(
        name=server.name,
        host=server.host,
        ssh_port=server.ssh_port,
        ssh_user=server.ssh_user,
        labels=server.labels,
        capacity=server.capacity,
        deploy_slots=server.deploy_slots,
        used_ports=0,
        port_min=server.port_min,
        port_max=server.port_max,
        public_host=server.public_host,
        state=ServerState.NEW,
        state_reason="",
        host_key=host_key,
    )


async def list_servers(sessionmaker: async_sessionmaker[AsyncSession]) -> list[ServerSummary]:
    """Every registered server with how many ports it has allocated, by name."""
    async with sessionmaker() as session:
        return await _summaries(session)


async def get_server(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> ServerSummary:
    """One server by name, or `ServerNotFound`."""
    async with sessionmaker() as session:
        found = await _summaries(session, name)
    if not found:
        raise _not_found(name)
    return found[0]


async def set_deploy_slots(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, slots: int | None
) -> ServerSummary:
    """Change how many deploys `name` takes at once (None: no limit of its own).

    The deployer reads it at each deploy, so the next deploy to the server obeys it; deploys
    already holding a slot finish."""
    check_deploy_slots(slots)
    async with sessionmaker() as session, session.begin():
        server = await session.scalar(select(Server).where(Server.name == name).with_for_update())
        if server is None:
            raise _not_found(name)
        server.deploy_slots = slots
    return await get_server(sessionmaker, name)


async def remove_server(
    sessionmaker: async_sessionmaker[AsyncSession],
    secrets: SecretStore,
    name: str,
    *,
    force: bool = False,
) -> ServerSummary:
    """Unregister `name` and delete its key from Vault; return what was removed.

    Refused while projects hold ports on it, unless `force`: then their allocations go too
    (the projects keep running until archived, but nothing new is placed there).
    """
    async with sessionmaker() as session, session.begin():
        # Locked so that no allocation lands on it between the count and the delete.
        server = await session.scalar(select(Server).where(Server.name == name).with_for_update())
        if server is None:
            raise _not_found(name)
        used = (
            await session.scalar(
                select(func.count(PortAllocation.id)).where(PortAllocation.server_id == server.id)
            )
            or 0
        )
        if used and not force:
            raise ServerInUse(
                f"server {name!r} still has {used} allocated port(s); archive those projects "
                f"first, or pass --force to drop their allocations too"
            )
        summary = _summary(server, used)
        await session.execute(delete(PortAllocation).where(PortAllocation.server_id == server.id))
        await session.execute(delete(Server).where(Server.id == server.id))
        await secrets.delete_secret(server_secret_path(name))
    return summary


async def _summaries(session: AsyncSession, name: str | None = None) -> list[ServerSummary]:
    query = (
        select(Server, func.count(PortAllocation.id))
        .outerjoin(PortAllocation, PortAllocation.server_id == Server.id)
        .group_by(Server.id)
        .order_by(Server.name)
    )
    if name is not None:
        query = query.where(Server.name == name)
    return [_summary(server, used) for server, used in (await session.execute(query)).tuples()]


def _not_found(name: str) -> ServerNotFound:
    return ServerNotFound(f"no server named {name!r}; `orchestrator servers list` shows them")


def _summary(server: Server, used: int) -> ServerSummary:
    return ServerSummary(
        name=server.name,
        host=server.host,
        ssh_port=server.ssh_port,
        ssh_user=server.ssh_user,
        labels=tuple(str(label) for label in server.labels),
        capacity=server.capacity,
        deploy_slots=server.deploy_slots,
        used_ports=used,
        port_min=server.port_min,
        port_max=server.port_max,
        public_host=server.public_host,
        state=ServerState(server.state),
        state_reason=server.state_reason,
        host_key=server.host_key,
    )


def parse_labels(text: str) -> tuple[str, ...]:
    """`"gpu, eu"` → `("gpu", "eu")`: the CLI's comma-separated form, duplicates dropped."""
    labels: list[str] = []
    for part in text.split(","):
        label = part.strip()
        if label and label not in labels:
            labels.append(label)
    return tuple(labels)


def parse_port_range(text: str) -> tuple[int, int]:
    """`"20000-20999"` → `(20000, 20999)`."""
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise InvalidServer(f"port range {text!r} must be written LOW-HIGH, e.g. 20000-20999")
    return int(low), int(high)
