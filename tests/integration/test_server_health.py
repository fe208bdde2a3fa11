"""The `server-health` job on the bus against a real sshd: stopped, the server gets one open
incident per failing check, becomes `unreachable` and admins are told; started again, the
incident is resolved and the server is `ready`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client

from consumers.ops.app import build_app
from consumers.ops.settings import OpsSettings
from contracts.events import SchedulerTick
from contracts.topology import NOTIFY, OPS
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.sshd_server import Sshd
from infra.vault import VaultClient, server_secret_path
from producers.scheduler.ticks import tick_for

from .conftest import sql, wait_for
from .test_coordinator import sql_exec, stored

ADMIN_CHAT = 4242


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd of this test's own, so stopping it disturbs no other test."""
    with Sshd(tmp_path / "sshd") as server:
        yield server


def _state(url: str) -> tuple[object, ...]:
    return sql(url, "SELECT state, state_reason FROM servers WHERE name = 'watched'")[0]


def _incidents(url: str) -> list[tuple[object, ...]]:
    return sql(url, "SELECT key, status FROM incidents ORDER BY opened_at")


async def test_an_unreachable_server_opens_an_incident_and_recovers(
    fresh_nats: NatsServer,
    migrated_db: str,
    nc: Client,
    openbao: BootstrappedOpenBao,
    host: Sshd,
) -> None:
    sql_exec(
        migrated_db,
        "INSERT INTO users (id, display_name, role, status, chat_id, created_at) VALUES "
        f"('tg:{ADMIN_CHAT}', 'Ada', 'admin', 'active', {ADMIN_CHAT}, now())",
    )
    sql_exec(
        migrated_db,
        "INSERT INTO servers (name, host, ssh_port, ssh_user, host_key, labels, capacity,"
        " port_min, port_max, public_host, state, created_at) VALUES ('watched',"
        f" '{host.host}', {host.port}, '{host.user}', '{host.known_hosts_line}', '[]', 5,"
        " 21000, 21004, '', 'ready', now())",
    )
    vault = VaultClient(openbao.addr, token=openbao.root_token)
    await vault.write_secret(
        server_secret_path("watched"), {"private_key": host.client_private_key}
    )
    app = build_app(
        Settings(
            nats={"url": fresh_nats.url},
            database={"url": migrated_db},
            vault={"addr": openbao.addr, "token": openbao.root_token},
        ),
        ops_settings=OpsSettings(min_free_disk_mb=1, min_free_memory_mb=1, ssh_timeout_seconds=5),
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    publisher = JetStreamPublisher.from_client(nc)
    now = datetime.now(UTC)

    async def sweep(minute: int) -> SchedulerTick:
        tick = tick_for("server-health", now + timedelta(minutes=minute), 60)
        await publisher.publish(tick)
        await wait_for(
            lambda: (
                sql(migrated_db, f"SELECT count(*) FROM inbox WHERE event_id = '{tick.event_id}'")[
                    0
                ][0]
                == 1
            ),
            60,
        )
        return tick

    try:
        await sweep(0)
        assert _incidents(migrated_db) == []
        assert _state(migrated_db) == ("ready", "")

        host.stop()
        for minute in (1, 2):  # two sweeps while it is down: still one incident
            await sweep(minute)
        assert _incidents(migrated_db) == [("server:watched:reachability", "open")]
        state, reason = _state(migrated_db)
        assert state == "unreachable"
        assert f"reachability: 127.0.0.1:{host.port}" in str(reason)
        opened = await stored(nc, OPS.name, "ops.incident.opened")
        assert [(o["key"], o["kind"]) for o in opened] == [
            ("server:watched:reachability", "server_reachability")
        ]
        told = await stored(nc, NOTIFY.name, "notify.requested")
        assert [(n["chat_id"], n["kind"]) for n in told] == [(ADMIN_CHAT, "failure")]
        assert "server watched failed its reachability check" in str(told[0]["text"])

        host.start()
        await sweep(3)
        assert _incidents(migrated_db) == [("server:watched:reachability", "resolved")]
        assert _state(migrated_db) == ("ready", "health checks pass")
        resolved = await stored(nc, OPS.name, "ops.incident.resolved")
        assert [r["key"] for r in resolved] == ["server:watched:reachability"]
        told = await stored(nc, NOTIFY.name, "notify.requested")
        assert "Server watched: reachability is fine again." in str(told[-1]["text"])
    finally:
        stop.set()
        await serving
