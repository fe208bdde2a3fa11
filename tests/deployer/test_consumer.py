"""The deployer process end to end: real nats-server, PostgreSQL, OpenBao (its own AppRole),
sshd and the real runtime; one DeployRequested on the bus becomes one DeploySucceeded, and one
naming a repository off the configured forge is dead-lettered without touching the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from sqlalchemy import func, select

from consumers.deployer.app import build_app
from consumers.deployer.deploy_slots import slot_key
from consumers.deployer.settings import DeployerSettings
from contracts.events import DeployRequested, DeploySucceeded
from contracts.spec import ConfigVar, ProjectSpec, ServiceKind
from contracts.topology import DEPLOYER, DLQ, H_DLQ_ERROR, dlq_subject
from infra.bus.codec import decode
from infra.bus.publisher import JetStreamPublisher
from infra.db.session import make_engine, make_sessionmaker
from infra.inventory import set_deploy_slots
from infra.settings import Settings
from infra.stack.git_daemon import GitDaemon
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao

from .conftest import SERVER_NAME, ServiceRepo, VaultSetup, service_port


def deployer_settings(
    nats_url: str, database_url: str, openbao: BootstrappedOpenBao, **consumer: object
) -> Settings:
    """The deployer's settings: its own AppRole (whose policy covers only its own NATS
    password; none is stored, the server has no auth here)."""
    credentials = openbao.credentials["deployer"]
    return Settings(
        process_name="deployer",
        nats={"url": nats_url},
        database={"url": database_url, "pool_size": 5},
        vault={
            "addr": openbao.addr,
            "role_id": credentials.role_id,
            "secret_id": credentials.secret_id,
        },
        consumer={"heartbeat_seconds": 2.0, **consumer},
    )


def http_deploy(vault_setup: VaultSetup, service_repo: ServiceRepo, port: int) -> DeployRequested:
    """A deploy of the service repository's good commit, as the coordinator sends it."""
    return DeployRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=vault_setup.project_id,
        spec=ProjectSpec(
            name="Bus deploy",
            slug="bus-deploy",
            summary="Deployed through the bus.",
            kinds=(ServiceKind.HTTP,),
            config=(ConfigVar(name="API_TOKEN", secret=True),),
        ),
        clone_url=service_repo.clone_url,
        commit=service_repo.good,
        server_name=SERVER_NAME,
        host="127.0.0.1",
        port=port,
    )


@contextlib.asynccontextmanager
async def deployer_running(
    settings: Settings, deploy_root: Path, *, concurrency: int
) -> AsyncIterator[Client]:
    """The deployer process serving until the block ends; yields a client of its NATS server
    once the process has started (its streams and durable exist)."""
    app = build_app(
        settings,
        deployer_settings=DeployerSettings(
            deploy_root=str(deploy_root), health_timeout_seconds=10, concurrency=concurrency
        ),
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    nc = await nats.connect(settings.nats.url)
    try:
        while app.publisher is None:
            if serving.done():
                serving.result()  # it failed to start: raise why
            await asyncio.sleep(0.05)
        yield nc
    finally:
        stop.set()
        await serving
        await nc.close()


async def test_deploy_request_on_the_bus_is_deployed(
    tmp_path: Path,
    deploy_database_url: str,
    openbao: BootstrappedOpenBao,
    vault_setup: VaultSetup,
    service_repo: ServiceRepo,
    deploy_root: Path,
    git_daemon: GitDaemon,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_REPO_DAEMON_URL", git_daemon.base_url)
    port = service_port()
    with NatsServer(tmp_path / "nats") as server:
        settings = deployer_settings(
            server.url, deploy_database_url, openbao, backoff_seconds=[0.2]
        )
        # One deploy at once: the forged request and the real one take turns.
        async with deployer_running(settings, deploy_root, concurrency=1) as nc:
            # The server holds the deployer to its configured concurrency, for every replica.
            info = await nc.jsm().consumer_info(DEPLOYER.stream.name, DEPLOYER.durable)
            assert info.config.max_ack_pending == 1
            outcomes = await nc.jetstream().subscribe("deploy.succeeded", ordered_consumer=True)
            request = http_deploy(vault_setup, service_repo, port)
            dead_letters = await nc.jetstream().subscribe(
                dlq_subject(DEPLOYER.durable), ordered_consumer=True
            )
            forged = request.model_copy(
                update={"event_id": uuid.uuid4(), "clone_url": "git://127.0.0.1:1/evil.git"}
            )
            await JetStreamPublisher.from_client(nc).publish(forged)
            await JetStreamPublisher.from_client(nc).publish(request)
            msg = await outcomes.next_msg(timeout=120)
            succeeded = decode(msg.subject, msg.data, msg.headers)
            dead = await dead_letters.next_msg(timeout=60)

    assert isinstance(succeeded, DeploySucceeded)
    assert succeeded.causation_id == request.event_id
    assert dead.headers is not None
    assert "not on the local forge" in dead.headers[H_DLQ_ERROR]
    assert decode(DeployRequested.TYPE, dead.data, dead.headers).event_id == forged.event_id
    assert succeeded.url == f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
        assert json.loads(response.read())["version"] == service_repo.good


async def test_a_deploy_waits_for_a_free_slot_of_its_server_and_then_ships(
    tmp_path: Path,
    deploy_database_url: str,
    openbao: BootstrappedOpenBao,
    vault_setup: VaultSetup,
    service_repo: ServiceRepo,
    deploy_root: Path,
    git_daemon: GitDaemon,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server takes one deploy at once (`orchestrator servers set local --deploy-slots 1`)
    and another deploy holds that slot: the request is neither shipped nor failed nor
    dead-lettered; it is retried, and ships as soon as the slot is free."""
    monkeypatch.setenv("ORCH_REPO_DAEMON_URL", git_daemon.base_url)
    engine = make_engine(deploy_database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    await set_deploy_slots(sessions, SERVER_NAME, 1)
    port = service_port()
    try:
        with NatsServer(tmp_path / "nats") as server:
            settings = deployer_settings(
                server.url, deploy_database_url, openbao, transient_backoff_seconds=[0.3]
            )
            async with deployer_running(settings, deploy_root, concurrency=2) as nc:
                async with engine.connect() as holder:  # another deploy, holding the one slot
                    key = func.hashtextextended(slot_key(SERVER_NAME, 0), 0)
                    assert await holder.scalar(select(func.pg_try_advisory_lock(key)))
                    await holder.commit()
                    outcomes = await nc.jetstream().subscribe("deploy.>", ordered_consumer=True)
                    request = http_deploy(vault_setup, service_repo, port)
                    await JetStreamPublisher.from_client(nc).publish(request)
                    assert (await outcomes.next_msg(timeout=30)).subject == DeployRequested.TYPE
                    jsm = nc.jsm()

                    async def deliveries() -> int:
                        info = await jsm.consumer_info(DEPLOYER.stream.name, DEPLOYER.durable)
                        return int(info.delivered.consumer_seq or 0)

                    deadline = asyncio.get_running_loop().time() + 120
                    while await deliveries() < 3:  # it came back for the slot, and again
                        assert asyncio.get_running_loop().time() < deadline, "never retried"
                        await asyncio.sleep(0.1)
                    # The tries that ended shipped, failed and dead-lettered nothing: the stream
                    # holds the request alone, and the dead-letter stream nothing.
                    deploys = await jsm.stream_info(DEPLOYER.stream.name)
                    assert deploys.state.messages == 1
                    assert (await jsm.stream_info(DLQ.name)).state.messages == 0
                    await holder.scalar(select(func.pg_advisory_unlock(key)))
                    await holder.commit()
                msg = await outcomes.next_msg(timeout=120)
                succeeded = decode(msg.subject, msg.data, msg.headers)
    finally:
        await set_deploy_slots(sessions, SERVER_NAME, None)
        await engine.dispose()
    assert isinstance(succeeded, DeploySucceeded), succeeded
    assert succeeded.causation_id == request.event_id
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
        assert json.loads(response.read())["version"] == service_repo.good
