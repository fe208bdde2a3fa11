"""Make this machine the embedded stack's deploy target: server `local` in the inventory.

Its SSH key goes to Vault (`servers/local`), never to the database; its host key is pinned
from the stack's own sshd. Re-running `orchestrator up` updates the row in place (the sshd
port or host key may have changed), keeping existing port allocations.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.dialects.postgresql import insert

from infra.db.models import Server, ServerState
from infra.db.session import make_engine, make_sessionmaker
from infra.vault import VaultClient, server_secret_path

LOCAL_SERVER = "local"
#: Ports the embedded target hands out; far from the stack's own fixed ports.
LOCAL_PORT_RANGE = (21000, 21999)


async def register_local_target(
    *,
    database_url: str,
    vault_addr: str,
    vault_token: str,
    host: str,
    ssh_port: int,
    ssh_user: str,
    known_hosts_line: str,
    client_key_path: Path,
    capacity: int = 100,
) -> None:
    vault = VaultClient(vault_addr, token=vault_token)
    await vault.write_secret(
        server_secret_path(LOCAL_SERVER),
        {"private_key": await asyncio.to_thread(client_key_path.read_text)},
    )
    engine = make_engine(database_url, pool_size=1)
    try:
        values = {
            "host": host,
            "ssh_port": ssh_port,
            "ssh_user": ssh_user,
            "host_key": known_hosts_line,
            "public_host": host,
        }
        async with make_sessionmaker(engine).begin() as session:
            await session.execute(
                insert(Server)
                .values(
                    name=LOCAL_SERVER,
                    labels=["local"],
                    capacity=capacity,
                    port_min=LOCAL_PORT_RANGE[0],
                    port_max=LOCAL_PORT_RANGE[1],
                    state=ServerState.READY,
                    **values,
                )
                .on_conflict_do_update(index_elements=["name"], set_=values)
            )
    finally:
        await engine.dispose()
