"""Alerts reach people: a real Prometheus, a real Alertmanager, the API's webhook, the notifier.

The chain as shipped: the engineer is not running, its durable's lag grows, the lag exporter
reports it, Prometheus fires `OrchestratorConsumerLagHigh` (the shipped rule, with its `for:`
shortened so the test need not wait ten minutes) to Debian's `prometheus-alertmanager` running
the shipped `infra/alertmanager/alertmanager.yml` (its URL, token file and group timings pointed
at the test), which posts to `POST /admin/alerts` with an admin API token; the API publishes a
notification per admin, and the notifier process delivers it to the fake Bot API. When the
backlog is gone the alert resolves and the admin is told that too. Members and admins without a
Telegram chat get nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.notifier.app import build_app as build_notifier
from contracts.topology import PROJECT
from infra.bus.credentials import NatsCredentials, store_credentials
from infra.bus.permissions import ADMIN, LAG_EXPORTER, all_permissions, new_passwords
from infra.bus.publisher import JetStreamPublisher
from infra.db.models import User, UserRole
from infra.db.session import make_engine, make_sessionmaker
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.vault import VaultClient
from producers.api.app import build_api
from producers.api.tokens import issue_token
from tests.api.conftest import served
from tests.fakes.telegram_api import Call, FakeTelegramAPI
from tests.notifier.conftest import BOT_TOKEN, running

from .conftest import REPO, RULES, Prometheus
from .lag_exporter_process import authenticated_nats, lag_exporter, publish_backlog

PASSWORDS = new_passwords(all_permissions())
ALERTMANAGER_CONFIG = REPO / "infra" / "alertmanager" / "alertmanager.yml"
ALERT = "OrchestratorConsumerLagHigh"
FIRED = f"❌ Alert {ALERT} (warning)\n"
RESOLVED = f"✅ Resolved: {ALERT}\nDurable engineer is 150 messages behind on PROJECT"
ADMIN_CHAT = 4242
MEMBER_CHAT = 5151


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert found, "alertmanager is missing: apt-get install prometheus-alertmanager"
    return found


def fast_lag_rule(directory: Path) -> Path:
    """The shipped lag rule, unchanged but for its `for:` (10 minutes) and the group's cadence."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == ALERT]
    path = directory / "rules.yml"
    fast = {**rule, "for": "1s"}
    group = {"name": "lag", "interval": "1s", "rules": [fast]}
    path.write_text(yaml.safe_dump({"groups": [group]}))
    return path


@contextlib.contextmanager
def alertmanager(directory: Path, webhook: str, token_file: Path) -> Iterator[str]:
    """The shipped config with the webhook's URL and token file pointed at this test."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    (receiver,) = config["receivers"]
    (hook,) = receiver["webhook_configs"]
    hook["url"] = webhook
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    config_path = directory / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = directory / "alertmanager.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                alertmanager_binary(),
                f"--config.file={config_path}",
                f"--storage.path={directory / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # a single instance, no gossip port
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log_path.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).is_success:
                        break
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[NatsServer]:
    with authenticated_nats(tmp_path / "nats", PASSWORDS) as server:
        yield server


@pytest.fixture
def exporter(bus: NatsServer, openbao: BootstrappedOpenBao, tmp_path: Path) -> Iterator[str]:
    with lag_exporter(bus, openbao, PASSWORDS[LAG_EXPORTER], tmp_path) as target:
        yield target


@pytest.fixture
async def sessionmaker(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_url, pool_size=5)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def seed_people(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """An admin with a chat, a member with a chat, an admin without one."""
    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                User(id=f"telegram:{ADMIN_CHAT}", chat_id=ADMIN_CHAT, role=UserRole.ADMIN),
                User(id=f"telegram:{MEMBER_CHAT}", chat_id=MEMBER_CHAT, role=UserRole.MEMBER),
                User(id="cli:ops", role=UserRole.ADMIN),
            ]
        )


def sent_to(chat: int, needle: str) -> Any:
    def check(calls: list[Call]) -> bool:
        return any(
            c.method == "sendMessage"
            and str(c.params.get("chat_id")) == str(chat)
            and needle in str(c.params.get("text"))
            for c in calls
        )

    return check


async def test_a_firing_rule_reaches_the_admins_telegram_chat_and_so_does_its_resolution(
    bus: NatsServer,
    exporter: str,
    openbao: BootstrappedOpenBao,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    start_prometheus: Any,
    tmp_path: Path,
) -> None:
    await seed_people(sessionmaker)
    issued = await issue_token(sessionmaker, "alertmanager", "alertmanager", role=UserRole.ADMIN)
    token_file = tmp_path / "api-token"
    token_file.write_text(issued.token + "\n")
    token_file.chmod(0o600)

    # The notifier logs in to OpenBao with its AppRole and reads its NATS password there.
    root = VaultClient(openbao.addr, token=openbao.root_token)
    await store_credentials(root, {"notifier": PASSWORDS["notifier"]})
    notifier_role = openbao.credentials["notifier"]
    settings = Settings(
        process_name="notifier",
        nats={"url": bus.url},
        database={"url": database_url, "pool_size": 5},
        vault={
            "addr": openbao.addr,
            "role_id": notifier_role.role_id,
            "secret_id": notifier_role.secret_id,
        },
        state_dir=tmp_path / "state",
    )

    async def bot_token() -> str:
        return BOT_TOKEN

    api_nc = await nats.connect(
        bus.url, **NatsCredentials("api", PASSWORDS["api"]).connect_options()
    )
    api_role = openbao.credentials["api"]
    api_vault = VaultClient(openbao.addr, role_id=api_role.role_id, secret_id=api_role.secret_id)
    await api_vault.login()
    api = build_api(
        JetStreamPublisher.from_client(api_nc),
        sessionmaker,
        api_vault,
        jetstream=api_nc.jetstream(),
    )
    try:
        async with (
            FakeTelegramAPI() as telegram,
            running(
                build_notifier(
                    settings,
                    token_source=bot_token,
                    telegram_api=TelegramAPIServer.from_base(telegram.base_url),
                )
            ),
            served(api) as api_url,
        ):
            with alertmanager(tmp_path, f"{api_url}/admin/alerts", token_file) as am:
                prometheus: Prometheus = await asyncio.to_thread(
                    start_prometheus,
                    {exporter: LAG_EXPORTER},
                    rules=fast_lag_rule(tmp_path),
                    alertmanager=am,
                )
                await publish_backlog(bus, PASSWORDS, 150)

                await telegram.wait_for(sent_to(ADMIN_CHAT, FIRED), timeout=90)
                (fired,) = telegram.calls_of("sendMessage")
                assert fired.params["text"].startswith(FIRED)
                assert "Durable engineer is 150 messages behind on PROJECT" in fired.params["text"]
                assert "Scale the consumer out" in fired.params["text"]

                # The backlog is dealt with (here: purged by the operator); the alert resolves.
                admin = await nats.connect(
                    bus.url, **NatsCredentials(ADMIN, PASSWORDS[ADMIN]).connect_options()
                )
                try:
                    await admin.jsm().purge_stream(PROJECT.name)
                finally:
                    await admin.close()
                await telegram.wait_for(sent_to(ADMIN_CHAT, RESOLVED), timeout=90)
                firing = await asyncio.to_thread(
                    prometheus.query, f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}'
                )
                assert firing == []

        sent = telegram.calls_of("sendMessage")
        assert {str(c.params["chat_id"]) for c in sent} == {str(ADMIN_CHAT)}
        assert len(sent) == 2, [c.params["text"] for c in sent]
    finally:
        await api_nc.close()
