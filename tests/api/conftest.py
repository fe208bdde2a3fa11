"""The API as a client meets it: a real uvicorn server over real JetStream, PostgreSQL, OpenBao."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import nats
import pytest
import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.bus.publisher import JetStreamPublisher
from infra.bus.topology import apply_topology
from infra.db.models import Project, ProjectState, UserRole
from infra.db.session import make_engine, make_sessionmaker
from infra.logging import configure_logging
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.vault import VaultClient
from producers.api.app import build_api
from producers.api.tokens import issue_token
from tests.project_seed import seed_project as seed_project_row


@pytest.fixture(scope="session")
async def bus_url(nats_server: NatsServer) -> str:
    await apply_topology(nats_server.url)
    return nats_server.url


@pytest.fixture
async def nc(bus_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(bus_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def sessionmaker(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_url, pool_size=5)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def api_vault(openbao: BootstrappedOpenBao) -> VaultClient:
    """The API's own Vault client: AppRole `api`, which may write project secrets only."""
    credentials = openbao.credentials["api"]
    vault = VaultClient(openbao.addr, role_id=credentials.role_id, secret_id=credentials.secret_id)
    await vault.login()
    return vault


@pytest.fixture
def root_vault(openbao: BootstrappedOpenBao) -> VaultClient:
    """An operator's client, to check what the API wrote (the API itself cannot read it)."""
    return VaultClient(openbao.addr, token=openbao.root_token)


@pytest.fixture
def app(
    nc: Client, sessionmaker: async_sessionmaker[AsyncSession], api_vault: VaultClient
) -> FastAPI:
    return build_api(
        JetStreamPublisher.from_client(nc), sessionmaker, api_vault, jetstream=nc.jetstream()
    )


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """`app` served by uvicorn on a random loopback port, as in production; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    async with served(app) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
        yield client


@dataclass(frozen=True)
class ApiUser:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def _user(
    sessionmaker: async_sessionmaker[AsyncSession],
    name: str,
    role: UserRole = UserRole.MEMBER,
) -> ApiUser:
    issued = await issue_token(sessionmaker, f"{name}-laptop", name, role=role)
    return ApiUser(user_id=issued.user_id, token=issued.token)


@pytest.fixture
async def alice(sessionmaker: async_sessionmaker[AsyncSession]) -> ApiUser:
    return await _user(sessionmaker, "alice")


@pytest.fixture
async def bob(sessionmaker: async_sessionmaker[AsyncSession]) -> ApiUser:
    return await _user(sessionmaker, "bob")


@pytest.fixture
async def root(sessionmaker: async_sessionmaker[AsyncSession]) -> ApiUser:
    """An admin: a token issued with `--role admin`."""
    return await _user(sessionmaker, "root", UserRole.ADMIN)


SeedProject = Callable[..., Awaitable[Project]]


@pytest.fixture
def seed_project(sessionmaker: async_sessionmaker[AsyncSession]) -> SeedProject:
    """Insert a project the way the coordinator records one (this producer only reads them)."""

    async def seed(
        user_id: str,
        *,
        state: ProjectState = ProjectState.AWAITING_ANSWER,
        slug: str = "todo-api",
        timeline: tuple[str, ...] = (),
    ) -> Project:
        return await seed_project_row(
            sessionmaker, user_id, state=state, slug=slug, timeline=timeline
        )

    return seed


@dataclass
class CapturedLogs:
    """What left the process (rendered JSON lines) and what was handed to logging (raw)."""

    rendered: io.StringIO
    raw: list[str]

    def text(self) -> str:
        return self.rendered.getvalue() + "\n".join(self.raw)


class _RawRecords(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self._sink.append(f"{record.getMessage()} {record.__dict__}")


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    """Every log line at DEBUG, as the process would write it and before any masking."""
    captured = CapturedLogs(rendered=io.StringIO(), raw=[])
    configure_logging("api", "DEBUG", stream=captured.rendered)
    raw = _RawRecords(captured.raw)
    logging.getLogger().addHandler(raw)
    try:
        yield captured
    finally:
        logging.getLogger().removeHandler(raw)
        configure_logging("tests", "INFO")
