"""Per-process NATS users on a real nats-server: who may publish and pull what.

The server runs with the authorization block the stack launcher generates from
`contracts.topology` (bcrypt hashes in a 0600 config file). Each refusal is checked twice: the
client is told (a permissions violation reaches its error callback) and nothing reached the
stream or left the durable, so a test cannot pass because a message merely went missing.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import SecretStr

from consumers.coordinator.queues import DurableQueues
from consumers.indexer.search_responder import SearchResponder
from contracts.topology import ANALYST, DEPLOY, DEPLOYER, INTENTS, PROJECT
from infra.bus.credentials import (
    NatsCredentials,
    nats_secret_path,
    process_credentials,
    store_credentials,
)
from infra.bus.nats_users import generate
from infra.bus.permissions import ADMIN, EXTERNAL, all_permissions, new_passwords
from infra.bus.permissions import render_authorization as render
from infra.bus.runtime import ConsumerApp, NatsUnavailable
from infra.bus.topology import apply_topology
from infra.db.migrate import upgrade
from infra.memory import MemoryDocument, MemoryHit, MemoryKind, MemoryStore, Scope
from infra.memory_client import BusMemorySearch
from infra.memory_search import LocalMemorySearch, MemoryUnavailable
from infra.settings import NatsSettings, Settings, VaultSettings
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao, approle_login
from infra.stack.ports import free_port
from infra.vault import VaultClient, VaultError
from producers.cli.connection import nats_client
from producers.cli.endpoints import Endpoints, NoStack

from .conftest import wait_for

PASSWORDS = new_passwords(all_permissions())


@pytest.fixture(scope="module")
def auth_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server that requires a user, with every platform user and its permissions."""
    directory = tmp_path_factory.mktemp("nats-auth")
    with NatsServer(directory, authorization=render(PASSWORDS)) as server:
        yield server


def creds(user: str) -> NatsCredentials:
    return NatsCredentials(user, PASSWORDS[user])


@contextlib.asynccontextmanager
async def client_as(
    server: NatsServer, user: str, errors: list[Exception] | None = None
) -> AsyncIterator[Client]:
    """A connection as `user`; permission violations the server reports go to `errors`."""

    async def collect(error: Exception) -> None:
        if errors is not None:
            errors.append(error)

    client = await nats.connect(
        server.url, error_cb=collect, allow_reconnect=False, **creds(user).connect_options()
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def admin(auth_nats: NatsServer) -> AsyncIterator[Client]:
    """The admin connection, with the topology applied and the streams touched emptied."""
    await apply_topology(auth_nats.url, connect_options=creds(ADMIN).connect_options())
    async with client_as(auth_nats, ADMIN) as client:
        for stream in (INTENTS, PROJECT, DEPLOY):
            await client.jsm().purge_stream(stream.name)
        yield client


def violation(errors: list[Exception], subject: str) -> bool:
    """Whether the server reported a permissions violation on `subject` (nats-py lowercases it)."""
    return any(
        "permissions violation" in str(error).lower() and subject.lower() in str(error).lower()
        for error in errors
    )


async def test_connection_without_a_user_or_with_a_wrong_password_is_refused(
    auth_nats: NatsServer,
) -> None:
    for options in ({}, {"user": "analyst", "password": "not-the-password"}):
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(
                auth_nats.url, allow_reconnect=False, max_reconnect_attempts=0, **options
            )


async def test_config_file_holds_hashes_only_and_is_private(auth_nats: NatsServer) -> None:
    text = auth_nats.config_path.read_text()
    assert auth_nats.config_path.stat().st_mode & 0o777 == 0o600
    assert not any(password in text for password in PASSWORDS.values())
    assert text.count('"$2a$') == len(PASSWORDS)


async def test_analyst_cannot_publish_deploy_requested(
    auth_nats: NatsServer, admin: Client
) -> None:
    errors: list[Exception] = []
    async with client_as(auth_nats, "analyst", errors) as analyst:
        js = analyst.jetstream()
        # Its own outcome goes through: the user works, only the subject is refused below.
        await js.publish(ANALYST_OUTCOME, b"{}", timeout=5)
        with pytest.raises(NatsTimeoutError):
            await js.publish("deploy.requested", b"{}", timeout=1)
        await wait_for(lambda: violation(errors, '"deploy.requested"'), timeout=10)
    deploys = await admin.jsm().stream_info(DEPLOY.name)
    assert deploys.state.messages == 0
    assert (await admin.jsm().stream_info(PROJECT.name)).state.messages == 1


ANALYST_OUTCOME = "project.spec.ready"


async def test_analyst_cannot_read_the_deployers_durable(
    auth_nats: NatsServer, admin: Client
) -> None:
    await admin.jetstream().publish("deploy.requested", b"{}", timeout=5)
    errors: list[Exception] = []
    async with client_as(auth_nats, "analyst", errors) as analyst:
        js = analyst.jetstream()
        stolen = await js.pull_subscribe_bind(durable=DEPLOYER.durable, stream=DEPLOY.name)
        with pytest.raises(NatsTimeoutError):
            await stolen.fetch(1, timeout=1)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{DEPLOY.name}.{DEPLOYER.durable}"
        await wait_for(lambda: violation(errors, next_subject), timeout=10)
        # Nor can it listen where the deployer's pulled messages arrive.
        with contextlib.suppress(NatsError):
            await analyst.subscribe("_INBOX_deployer.>")
            await analyst.flush(timeout=2)
        await wait_for(lambda: violation(errors, "_INBOX_deployer.>"), timeout=10)
        # Its own durable it may pull (the positive control for the refusal above).
        await admin.jetstream().publish(ANALYST.subjects[0], b"{}", timeout=5)
        own = await js.pull_subscribe_bind(durable=ANALYST.durable, stream=PROJECT.name)
        [message] = await own.fetch(1, timeout=5)
        await message.ack_sync(timeout=5)
    deployer = await admin.jsm().consumer_info(DEPLOY.name, DEPLOYER.durable)
    assert deployer.num_pending == 1
    assert deployer.num_ack_pending == 0


async def test_the_coordinator_counts_the_deploy_queue_and_cannot_take_from_it(
    auth_nats: NatsServer, admin: Client
) -> None:
    for _ in range(3):
        await admin.jetstream().publish("deploy.requested", b"{}", timeout=5)
    errors: list[Exception] = []
    async with client_as(auth_nats, "coordinator", errors) as coordinator:
        assert await DurableQueues(lambda: coordinator).ahead("deploy") == 3
        taken = await coordinator.jetstream().pull_subscribe_bind(
            durable=DEPLOYER.durable, stream=DEPLOY.name
        )
        with pytest.raises(NatsTimeoutError):
            await taken.fetch(1, timeout=1)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{DEPLOY.name}.{DEPLOYER.durable}"
        await wait_for(lambda: violation(errors, next_subject), timeout=10)
    async with client_as(auth_nats, "analyst") as analyst:  # not a reader: the count is unknown
        assert await DurableQueues(lambda: analyst).ahead("deploy") is None
    assert (await admin.jsm().consumer_info(DEPLOY.name, DEPLOYER.durable)).num_pending == 3


async def test_external_user_may_publish_intents_only(auth_nats: NatsServer, admin: Client) -> None:
    errors: list[Exception] = []
    async with client_as(auth_nats, EXTERNAL, errors) as external:
        js = external.jetstream()
        ack = await js.publish("intents.project.requested", b"{}", timeout=5)
        assert ack.stream == INTENTS.name
        with pytest.raises(NatsTimeoutError):
            await js.publish("deploy.requested", b"{}", timeout=1)
        await wait_for(lambda: violation(errors, '"deploy.requested"'), timeout=10)
    assert (await admin.jsm().stream_info(INTENTS.name)).state.messages == 1
    assert (await admin.jsm().stream_info(DEPLOY.name)).state.messages == 0


async def test_only_the_analyst_and_engineer_may_ask_the_indexer_for_memory(
    auth_nats: NatsServer, tmp_path: Path
) -> None:
    """The indexer answers as its own user (subscribe `memory.search`, reply by
    `allow_responses`); an analyst's search returns only its scope even when another user's
    text matches better; a notifier may neither ask nor listen in."""
    alice, bob = "tg:alice", "tg:bob"
    shop, weather = uuid.UUID(int=1), uuid.UUID(int=2)
    with MemoryStore.open_local(tmp_path / "memory") as store:
        store.upsert(
            [
                MemoryDocument(alice, shop, MemoryKind.SPEC, "spec", "A book shop taking orders"),
                MemoryDocument(
                    bob, weather, MemoryKind.SPEC, "spec", "Bot sending weather forecasts daily"
                ),
            ]
        )
        local = LocalMemorySearch(store)
        asked: list[str] = []

        class Counting:
            async def search(self, scope: Scope, text: str, **options: Any) -> list[MemoryHit]:
                asked.append(scope.user_id)
                return await local.search(scope, text, **options)

        errors: list[Exception] = []
        async with (
            client_as(auth_nats, "indexer") as indexer,
            client_as(auth_nats, "analyst") as analyst,
            client_as(auth_nats, "notifier", errors) as notifier,
        ):
            await SearchResponder(Counting()).start(indexer)
            await indexer.flush()
            query = "shop weather forecasts daily"
            hits = await BusMemorySearch(analyst).search(Scope(alice), query)
            assert [(hit.project_id, hit.text) for hit in hits] == [
                (shop, "A book shop taking orders")
            ]
            [bobs] = await BusMemorySearch(analyst).search(Scope(bob), query)
            assert bobs.project_id == weather and bobs.score > hits[0].score

            with pytest.raises(MemoryUnavailable):
                await BusMemorySearch(notifier, timeout=1).search(Scope(bob), query)
            await wait_for(lambda: violation(errors, '"memory.search"'), timeout=10)
            with contextlib.suppress(NatsError):
                await notifier.subscribe("memory.search")
                await notifier.flush(timeout=2)
            await wait_for(
                lambda: sum(violation([e], '"memory.search"') for e in errors) >= 2, timeout=10
            )
        # The indexer saw the analyst's two requests and nothing from the notifier.
        assert asked == [alice, bob]


async def test_a_process_reads_only_its_own_password_from_vault(
    openbao: BootstrappedOpenBao,
) -> None:
    root = VaultClient(openbao.addr, token=openbao.root_token)
    await store_credentials(root, {"analyst": PASSWORDS["analyst"], "deployer": "x" * 12})
    analyst = VaultClient(
        openbao.addr,
        role_id=openbao.credentials["analyst"].role_id,
        secret_id=openbao.credentials["analyst"].secret_id,
    )
    await analyst.login()
    mine = await process_credentials(_settings("analyst", "nats://unused", openbao), analyst)
    assert mine == NatsCredentials("analyst", PASSWORDS["analyst"])
    with pytest.raises(VaultError, match="may not read"):
        await analyst.read_secret(nats_secret_path("deployer"))


async def test_consumer_runtime_starts_as_its_own_user(
    auth_nats: NatsServer, admin: Client, openbao: BootstrappedOpenBao, database_url: str
) -> None:
    """The runtime logs in to Vault, connects as the analyst, checks streams, makes its durable.

    Declaring streams is the admin's: had the runtime tried to update one, or had its user been
    unable to create its own durable, the server would have refused and `start` would fail.
    """
    upgrade(database_url)
    root = VaultClient(openbao.addr, token=openbao.root_token)
    await store_credentials(root, {"analyst": PASSWORDS["analyst"]})
    await admin.jsm().delete_consumer(PROJECT.name, ANALYST.durable)
    settings = _settings("analyst", auth_nats.url, openbao)
    settings.database.url = database_url
    app = ConsumerApp("analyst", settings=settings)
    await app.start()
    try:
        info = await admin.jsm().consumer_info(PROJECT.name, ANALYST.durable)
        assert info.config.durable_name == ANALYST.durable
    finally:
        await app.stop()


async def test_a_runtime_that_cannot_connect_exits_and_says_why(
    auth_nats: NatsServer, openbao: BootstrappedOpenBao, database_url: str
) -> None:
    """No server answers: `start` gives up after the connect timeout with the last error.

    With unbounded reconnects nats-py retries a first connection forever, which would leave a
    process that looks alive and consumes nothing. A refused login already fails at once
    (the runtime stops at the first refusal); both end with a message an operator can act on.
    """
    root = VaultClient(openbao.addr, token=openbao.root_token)
    await store_credentials(root, {"analyst": PASSWORDS["analyst"]})
    nobody = f"nats://127.0.0.1:{free_port()}"
    settings = _settings("analyst", nobody, openbao)
    settings.database.url = database_url
    settings.nats.connect_timeout_seconds = 3
    app = ConsumerApp("analyst", settings=settings)
    try:
        with pytest.raises(NatsUnavailable, match=r"within 3s; .* Connect call failed"):
            await app.start()
    finally:
        await app.stop()

    await store_credentials(root, {"analyst": "not-the-password"})
    refused = ConsumerApp("analyst", settings=_settings("analyst", auth_nats.url, openbao))
    try:
        with pytest.raises(NatsError, match=r"(?i)authorization violation"):
            await refused.start()
    finally:
        await refused.stop()
        await store_credentials(root, {"analyst": PASSWORDS["analyst"]})


def _settings(process: str, nats_url: str, openbao: BootstrappedOpenBao) -> Settings:
    role = openbao.credentials[process]
    return Settings(
        process_name=process,
        nats=NatsSettings(url=nats_url),
        vault=VaultSettings(
            addr=openbao.addr, role_id=role.role_id, secret_id=SecretStr(role.secret_id)
        ),
    )


@pytest.mark.parametrize("account", [None, "ORCHESTRATOR"])
async def test_deployment_users_file_is_a_valid_config_and_matches_vault(
    tmp_path: Path, openbao: BootstrappedOpenBao, account: str | None
) -> None:
    """`python -m infra.bus.nats_users` output: nats-server runs with it, Vault holds the passwords.

    The bare list is included inside an account (as infra/nats/nats-server.conf does); with
    `--account` the file is a whole accounts block (the Helm chart's NATS). A client then logs
    in as the analyst with the password Vault returns, and JetStream works for it.
    """
    root = VaultClient(openbao.addr, token=openbao.root_token)
    data = tmp_path / "data"
    users = await generate(data / "auth" / "users.conf", account, root)
    assert set(users) == set(all_permissions())
    assert (data / "auth" / "users.conf").stat().st_mode & 0o777 == 0o600
    include = 'include "auth/users.conf"'
    if account is None:
        include = f"accounts {{\n  ORCHESTRATOR {{\n    jetstream: enabled\n    {include}\n  }}\n}}"
    with NatsServer(data, authorization=include + "\n") as server:
        password = (await root.read_secret(nats_secret_path(ADMIN)))["password"]
        client = await nats.connect(
            server.url, **NatsCredentials(ADMIN, password).connect_options()
        )
        try:
            await client.jsm().add_stream(name="PROBE", subjects=["probe.>"])
            ack = await client.jetstream().publish("probe.one", b"{}", timeout=5)
            assert ack.stream == "PROBE"
        finally:
            await client.close()


async def test_operator_cli_connects_as_admin_and_says_what_to_do_without_a_token(
    auth_nats: NatsServer, admin: Client, openbao: BootstrappedOpenBao
) -> None:
    """The CLI reads the admin password with the operator's token; without one it says so."""
    root = VaultClient(openbao.addr, token=openbao.root_token)
    await store_credentials(root, {ADMIN: PASSWORDS[ADMIN]})
    operator_token = approle_login(openbao.addr, openbao.credentials["operator"])
    endpoints = Endpoints(auth_nats.url, "", openbao.addr, operator_token, Path("."))
    async with nats_client(endpoints) as client:
        info = await client.jsm().stream_info(INTENTS.name)
        assert info.config.name == INTENTS.name
    without_token = Endpoints(auth_nats.url, "", openbao.addr, "", Path("."))
    with pytest.raises(NoStack, match="ORCH_VAULT__TOKEN"):
        async with nats_client(without_token):
            pass
