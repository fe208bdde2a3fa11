"""Fixtures for runtime tests: a fresh nats-server and a migrated database per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from nats.aio.client import Client

from infra.bus.connection import connect
from infra.bus.topology import apply_topology
from infra.stack.nats_server import NatsServer
from infra.stack.postgres_server import PostgresServer

from .workload import EFFECTS_DDL

WORKLOAD = Path(__file__).with_name("workload.py")


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own: streams and durables start empty."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, so stopping it disturbs no other test."""
    data_dir = Path(tempfile.mkdtemp(prefix="orchestrator-test-outage-"))
    try:
        with PostgresServer(data_dir, fsync=False) as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def migrated_db(migrated_url: str) -> str:
    with psycopg.connect(plain_url(migrated_url), autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)
    return migrated_url


@pytest.fixture
async def nc(fresh_nats: NatsServer) -> AsyncIterator[Client]:
    await apply_topology(fresh_nats.url)
    # Through the product's helper, so its publishers send again after a restart (on_reconnect).
    client = await connect(fresh_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield client
    await client.close()


def plain_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


def sql(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(plain_url(url)) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def start_replica(nats_url: str, db_url: str, replica: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ORCH_NATS__URL": nats_url, "ORCH_DATABASE__URL": db_url}
    return subprocess.Popen(
        [sys.executable, str(WORKLOAD), "--replica", replica, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_replica(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_for(predicate: object, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Poll `predicate()` until true; fail with the timeout otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
