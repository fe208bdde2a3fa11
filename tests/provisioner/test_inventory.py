"""`orchestrator servers` against real PostgreSQL, OpenBao and sshd."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.provisioner.service import ProvisionerService
from infra.inventory import (
    HostKeyScanFailed,
    InvalidServer,
    ServerExists,
    ServerInUse,
    ServerNotFound,
    get_server,
    scan_host_key,
)
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.stack.sshd_server import Sshd
from infra.vault import SecretNotFound, VaultClient
from producers.cli import servers
from producers.cli.main import dispatch
from producers.cli.parser import build_parser


@pytest.fixture
def vault(openbao: BootstrappedOpenBao) -> VaultClient:
    """A token client, as the CLI builds from the stack's operator token."""
    return VaultClient(openbao.addr, token=openbao.root_token)


class Lines(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self)


async def mark_ready(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> None:
    """What a successful `servers bootstrap` leaves (tested in tests/integration)."""
    async with sessionmaker.begin() as session:
        await session.execute(
            text("UPDATE servers SET state = 'ready' WHERE name = :name"), {"name": name}
        )


def unique_name() -> str:
    return f"srv-{uuid.uuid4().hex[:8]}"


async def test_add_stores_the_key_in_vault_and_nothing_secret_in_the_database(
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: VaultClient,
    sshd_server: Sshd,
) -> None:
    name, out = unique_name(), Lines()
    code = await servers.add(
        sessionmaker, vault, out,
        name=name, host=sshd_server.host, ssh_port=sshd_server.port, user=sshd_server.user,
        key_file=sshd_server.client_key_path, scan=True, labels="local, ssd", capacity=5,
        ports="21000-21009",
    )  # fmt: skip
    assert code == 0
    stored = await vault.read_secret(f"servers/{name}")
    assert stored == {"private_key": sshd_server.client_private_key}

    async with sessionmaker() as session:
        rows = (await session.execute(text("SELECT row_to_json(s)::text FROM servers s"))).all()
    dump = "\n".join(row[0] for row in rows)
    key_body = "".join(sshd_server.client_private_key.strip().splitlines()[1:-1])
    assert "PRIVATE KEY" not in dump
    assert key_body[:40] not in dump

    server = await get_server(sessionmaker, name)
    # Scanned once, pinned for this exact host and port.
    assert server.host_key == sshd_server.known_hosts_line
    assert server.labels == ("local", "ssd")
    assert (server.capacity, server.port_min, server.port_max) == (5, 21000, 21009)
    blob = base64.b64decode(sshd_server.known_hosts_line.split()[2])
    expected = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert f"SHA256:{expected} (ssh-ed25519)" in out.text


async def test_a_given_host_key_is_pinned_to_the_servers_address(
    sessionmaker: async_sessionmaker[AsyncSession], vault: VaultClient, sshd_server: Sshd
) -> None:
    name = unique_name()
    bare = " ".join(sshd_server.known_hosts_line.split()[1:]) + " some-comment"
    await servers.add(
        sessionmaker, vault, Lines(),
        name=name, host="10.0.0.7", ssh_port=2222, key_file=sshd_server.client_key_path,
        host_key=bare,
    )  # fmt: skip
    server = await get_server(sessionmaker, name)
    key_type, body = sshd_server.known_hosts_line.split()[1:]
    assert server.host_key == f"[10.0.0.7]:2222 {key_type} {body}"


async def test_a_duplicate_name_is_refused_and_keeps_the_first_key(
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: VaultClient,
    sshd_server: Sshd,
    tmp_path: Path,
) -> None:
    name = unique_name()
    pinned = sshd_server.known_hosts_line
    await servers.add(
        sessionmaker, vault, Lines(),
        name=name, host="h1", host_key=pinned, key_file=sshd_server.client_key_path,
    )  # fmt: skip
    other_key = tmp_path / "other"
    other_key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n"
                         "-----END OPENSSH PRIVATE KEY-----\n")  # fmt: skip
    with pytest.raises(ServerExists, match=f"servers remove {name}"):
        await servers.add(
            sessionmaker, vault, Lines(), name=name, host="h1", host_key=pinned, key_file=other_key
        )
    stored = await vault.read_secret(f"servers/{name}")
    assert stored["private_key"] == sshd_server.client_private_key


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"capacity": 50, "ports": "20000-20009"}, "capacity 50 must be between 1 and the 10"),
        ({"ports": "20010-20000"}, "is empty"),
        ({"ports": "lots"}, "LOW-HIGH"),
        ({"name": "Bad Name"}, "server name"),
        ({"labels": "ok,not ok"}, "label 'not ok'"),
        ({"host_key": "ssh-ed25519 not-base64!"}, "damaged"),
        ({"host_key": "hello world"}, "is not `[HOST]:PORT KEYTYPE BASE64`"),
        ({"host_key": None}, "exactly one of --host-key"),
        ({"scan": True}, "exactly one of --host-key"),
        ({"public_key_file": True}, "not the .pub"),
        ({"key_file": Path("/nonexistent/key")}, "cannot read the key file"),
    ],
)
async def test_bad_registrations_are_refused_with_the_reason(
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: VaultClient,
    sshd_server: Sshd,
    overrides: dict[str, object],
    message: str,
) -> None:
    arguments: dict[str, object] = {
        "name": unique_name(),
        "host": "h",
        "key_file": sshd_server.client_key_path,
        "host_key": sshd_server.known_hosts_line,
    }
    if overrides.pop("public_key_file", False):
        arguments["key_file"] = sshd_server.client_key_path.with_suffix(".pub")
    arguments.update(overrides)
    with pytest.raises(InvalidServer, match=message.replace("[", r"\[").replace(".", r"\.")):
        await servers.add(sessionmaker, vault, Lines(), **arguments)  # type: ignore[arg-type]
    assert await servers.show(sessionmaker, Lines()) == 0


async def test_scanning_a_port_without_sshd_fails_clearly() -> None:
    port = free_port()
    with pytest.raises(HostKeyScanFailed, match=f"no host key at 127.0.0.1:{port}"):
        await scan_host_key("127.0.0.1", port, scan_seconds=2)


async def test_list_shows_capacity_and_used_ports(
    sessionmaker: async_sessionmaker[AsyncSession], vault: VaultClient, sshd_server: Sshd
) -> None:
    empty = Lines()
    await servers.show(sessionmaker, empty)
    assert "no servers registered" in empty.text
    for name, labels in (("alpha", "gpu"), ("beta", "")):
        await servers.add(
            sessionmaker, vault, Lines(), name=name, host=f"{name}.example", capacity=4,
            ports="30000-30099", labels=labels, key_file=sshd_server.client_key_path,
            host_key=sshd_server.known_hosts_line,
        )  # fmt: skip
        await mark_ready(sessionmaker, name)
    async with sessionmaker.begin() as session:
        for _ in range(3):
            await ProvisionerService(session).allocate(uuid.uuid4(), ("gpu",))
    said = Lines()
    assert await servers.set_slots(sessionmaker, said, name="alpha", slots=2) == 0
    assert "server alpha takes 2 deploy(s) at once" in said.text
    out = Lines()
    await servers.show(sessionmaker, out)
    header, alpha, beta = (line.split() for line in out)
    assert header == ["NAME", "HOST", "STATE", "LABELS", "CAPACITY", "USED", "DEPLOYS", "PORTS"]
    assert alpha == ["alpha", "alpha.example", "ready", "gpu", "4", "3", "2", "30000-30099"]
    assert beta == ["beta", "beta.example", "ready", "-", "4", "0", "-", "30000-30099"]
    with pytest.raises(InvalidServer, match="deploy slots 0 must be between 1 and 64"):
        await servers.set_slots(sessionmaker, Lines(), name="beta", slots=0)
    with pytest.raises(ServerNotFound, match="servers list"):
        await servers.set_slots(sessionmaker, Lines(), name="gamma", slots=1)
    await servers.set_slots(sessionmaker, Lines(), name="alpha", slots=None)
    assert (await get_server(sessionmaker, "alpha")).deploy_slots is None


async def test_remove_refuses_while_ports_are_allocated_unless_forced(
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: VaultClient,
    sshd_server: Sshd,
) -> None:
    name = unique_name()
    await servers.add(
        sessionmaker, vault, Lines(), name=name, host="h", key_file=sshd_server.client_key_path,
        host_key=sshd_server.known_hosts_line,
    )  # fmt: skip
    await mark_ready(sessionmaker, name)
    async with sessionmaker.begin() as session:
        await ProvisionerService(session).allocate(uuid.uuid4())
    with pytest.raises(ServerInUse, match="1 allocated port"):
        await servers.remove(sessionmaker, vault, Lines(), name=name)
    assert (await get_server(sessionmaker, name)).used_ports == 1

    out = Lines()
    assert await servers.remove(sessionmaker, vault, out, name=name, force=True) == 0
    assert "1 allocation(s) dropped" in out.text
    with pytest.raises(ServerNotFound):
        await get_server(sessionmaker, name)
    with pytest.raises(SecretNotFound):
        await vault.read_secret(f"servers/{name}")
    with pytest.raises(ServerNotFound, match="servers list"):
        await servers.remove(sessionmaker, vault, Lines(), name=name)


async def test_the_argparse_commands_drive_the_same_functions(
    migrated_url: str,
    openbao: BootstrappedOpenBao,
    sshd_server: Sshd,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("ORCH_NATS__URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("ORCH_DATABASE__URL", migrated_url)
    monkeypatch.setenv("ORCH_VAULT__ADDR", openbao.addr)
    monkeypatch.setenv("ORCH_VAULT__TOKEN", openbao.root_token)
    parser = build_parser()

    async def cli(*argv: str) -> int:
        args = parser.parse_args(["--state-dir", str(tmp_path), *argv])
        code: int = await asyncio.to_thread(dispatch, args)
        return code

    key = str(sshd_server.client_key_path)
    assert await cli("servers", "add", "cli-one", "--host", sshd_server.host,
                     "--ssh-port", str(sshd_server.port), "--key-file", key,
                     "--scan", "--labels", "a,b", "--deploy-slots", "3") == 0  # fmt: skip
    assert "added server cli-one" in capsys.readouterr().out
    assert await cli("servers", "list", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["deploy_slots"] == 3
    assert await cli("servers", "set", "cli-one", "--deploy-slots", "none") == 0
    assert "takes no limit of its own" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["servers", "set", "cli-one", "--deploy-slots", "many"])
    assert "not a number of slots" in capsys.readouterr().err
    assert await cli("servers", "add", "cli-one", "--host", "x", "--key-file", key,
                     "--host-key", sshd_server.known_hosts_line) == 1  # fmt: skip
    assert "already registered" in capsys.readouterr().err
    assert await cli("servers", "list") == 0
    assert "cli-one" in capsys.readouterr().out
    assert await cli("servers", "remove", "cli-one") == 0
    assert await cli("servers", "list") == 0
    assert "no servers registered" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["servers", "add", "x", "--host", "h", "--key-file", "k"])
