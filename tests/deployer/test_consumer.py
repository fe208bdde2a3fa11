"""The deployer process end to end: real nats-server, PostgreSQL, OpenBao (its own AppRole),
sshd and the real runtime; one DeployRequested on the bus becomes one DeploySucceeded, and one
naming a repository off the configured forge is dead-lettered without touching the server."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from pathlib import Path

import nats
import pytest

from consumers.deployer.app import build_app
from consumers.deployer.settings import DeployerSettings
from contracts.events import DeployRequested, DeploySucceeded
from contracts.spec import ConfigVar, ProjectSpec, ServiceKind
from contracts.topology import DEPLOYER, H_DLQ_ERROR, dlq_subject
from infra.bus.codec import decode
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.git_daemon import GitDaemon
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port

from .conftest import SERVER_NAME, ServiceRepo, VaultSetup


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
    credentials = openbao.credentials["deployer"]
    port = free_port()
    with NatsServer(tmp_path / "nats") as server:
        settings = Settings(
            # Its own Vault policy covers only its own NATS password (none stored: no auth here).
            process_name="deployer",
            nats={"url": server.url},
            database={"url": deploy_database_url, "pool_size": 5},
            vault={
                "addr": openbao.addr,
                "role_id": credentials.role_id,
                "secret_id": credentials.secret_id,
            },
            consumer={"backoff_seconds": [0.2], "heartbeat_seconds": 2.0},
        )
        app = build_app(
            settings,
            # One deploy at once: the forged request and the real one take turns.
            deployer_settings=DeployerSettings(
                deploy_root=str(deploy_root), health_timeout_seconds=10, concurrency=1
            ),
        )
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop))
        nc = await nats.connect(server.url)
        try:
            while app.publisher is None:
                await asyncio.sleep(0.05)
            # The server holds the deployer to its configured concurrency, for every replica.
            info = await nc.jsm().consumer_info(DEPLOYER.stream.name, DEPLOYER.durable)
            assert info.config.max_ack_pending == 1
            outcomes = await nc.jetstream().subscribe("deploy.succeeded", ordered_consumer=True)
            request = DeployRequested(
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
        finally:
            stop.set()
            await serving
            await nc.close()

    assert isinstance(succeeded, DeploySucceeded)
    assert succeeded.causation_id == request.event_id
    assert dead.headers is not None
    assert "not on the local forge" in dead.headers[H_DLQ_ERROR]
    assert decode(DeployRequested.TYPE, dead.data, dead.headers).event_id == forged.event_id
    assert succeeded.url == f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
        assert json.loads(response.read())["version"] == service_repo.good
