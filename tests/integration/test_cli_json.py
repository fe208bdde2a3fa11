"""Every `orchestrator` read command with `--json`, run as a script runs it: a subprocess against
real PostgreSQL, NATS and OpenBao, seeded through the project's own code. Each answer must parse
as one JSON document holding the fields a script reads, and never a secret value or a token."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client
from sqlalchemy import update

from contracts.topology import CONSUMERS, DEPLOYER, INTENTS
from infra.bus.dead_letter import dead_letter
from infra.bus.publisher import JetStreamPublisher
from infra.bus.topology import apply_consumers, apply_streams, with_concurrency
from infra.db.models import Project, ProjectState
from infra.db.session import make_engine, make_sessionmaker
from infra.inventory import NewServer, add_server
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.vault import VaultClient, project_secret_path
from producers.api.tokens import issue_token
from producers.intents import project_request
from tests.project_seed import seed_project

ROOT = Path(__file__).resolve().parents[2]
SECRET_VALUE = "s3cret-value-never-printed"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def host_key_line() -> str:
    """A well-formed ed25519 known_hosts body (the inventory checks the blob names its type)."""
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


@dataclass(frozen=True)
class System:
    env: dict[str, str]
    token: str
    project_id: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        assert SECRET_VALUE not in done.stdout
        assert self.token not in done.stdout
        return json.loads(done.stdout)


@pytest.fixture
async def system(
    migrated_db: str, fresh_nats: NatsServer, nc: Client, openbao: BootstrappedOpenBao
) -> System:
    engine = make_engine(migrated_db)
    sessions = make_sessionmaker(engine)
    vault = VaultClient(openbao.addr, token=openbao.root_token)
    try:
        live = await seed_project(
            sessions, "tg:1", state=ProjectState.ACTIVE, slug="notes-api", timeline=("live",)
        )
        async with sessions() as session, session.begin():
            await session.execute(
                update(Project).where(Project.id == live.id).values(missing_secrets=["BOT_TOKEN"])
            )
        await vault.write_secret(
            project_secret_path(str(live.id), "API_KEY"), {"value": SECRET_VALUE}
        )
        await add_server(
            sessions,
            vault,
            NewServer(name="edge-1", host="10.0.0.7", host_key=f"10.0.0.7 {host_key_line()}",
                      labels=("eu",)),
            PRIVATE_KEY,
        )  # fmt: skip
        issued = await issue_token(sessions, "ci", "ci")
    finally:
        await engine.dispose()
    await _one_dead_letter(nc)
    env = {
        **os.environ,
        "ORCH_NATS__URL": fresh_nats.url,
        "ORCH_DATABASE__URL": migrated_db,
        "ORCH_VAULT__ADDR": openbao.addr,
        "ORCH_VAULT__TOKEN": openbao.root_token,
    }
    return System(env=env, token=issued.token, project_id=str(live.id))


async def _one_dead_letter(nc: Client) -> None:
    """A project request on the bus, then dead-lettered by the consumer of its stream."""
    publisher = JetStreamPublisher.from_client(nc)
    await publisher.publish(project_request("a notes api", user_id="tg:1", source="cli"))
    sub = await nc.jetstream().subscribe(
        INTENTS.subjects[0], stream=INTENTS.name, ordered_consumer=True
    )
    msg = await sub.next_msg(timeout=10)
    await sub.unsubscribe()
    spec = next(c for c in CONSUMERS if c.stream is INTENTS)
    await dead_letter(publisher, spec, msg, "boom: the handler raised", 3)


async def test_project_reads_answer_json(system: System) -> None:
    status = system.json("status", "notes-api")
    assert isinstance(status, dict)
    assert (status["id"], status["state"], status["slug"]) == (
        system.project_id,
        "active",
        "notes-api",
    )
    assert status["missing_secrets"] == ["BOT_TOKEN"]
    assert [t["summary"] for t in status["timeline"]] == ["live"]
    assert set(status["timeline"][0]) == {"at", "type", "actor", "state", "summary"}

    projects = system.json("projects")
    assert [(p["id"], p["state"], p["owner"]) for p in projects] == [
        (system.project_id, "active", "tg:1")
    ]


async def test_secrets_list_names_stored_and_awaited_secrets_never_values(system: System) -> None:
    secrets = system.json("secrets", "list", "notes-api")
    assert secrets == {
        "project_id": system.project_id,
        "stored": ["API_KEY"],
        "missing": ["BOT_TOKEN"],
    }

    human = system.cli("secrets", "list", "notes-api")
    assert human.returncode == 0, human.stderr
    assert human.stdout.split() == ["API_KEY", "stored", "BOT_TOKEN", "missing:", "the",
                                    "deploy", "waits", "for", "it"]  # fmt: skip


async def test_inventory_people_and_tokens_answer_json(system: System) -> None:
    (server,) = system.json("servers", "list")
    assert (server["name"], server["host"], server["labels"], server["used_ports"]) == (
        "edge-1", "10.0.0.7", ["eu"], 0
    )  # fmt: skip
    assert (server["state"], server["state_reason"]) == ("new", "")
    assert server["host_key_fingerprints"][0].startswith("SHA256:")
    assert PRIVATE_KEY.splitlines()[1] not in json.dumps(server)

    (token,) = system.json("tokens", "list")
    assert token == {
        "name": "ci", "user": "api:ci", "role": "member", "created_at": token["created_at"],
        "last_used_at": None, "expires_at": None, "status": "active",
    }  # fmt: skip

    people = system.json("users", "list")
    assert {(p["id"], p["status"]) for p in people} >= {("tg:1", "active")}


async def test_bus_reads_answer_json(system: System) -> None:
    lag = system.json("lag")
    assert isinstance(lag, list)
    assert {row["durable"] for row in lag} == {c.durable for c in CONSUMERS}
    assert set(lag[0]) == {
        "durable", "stream", "pending", "ack_pending", "concurrency", "redelivered", "error"
    }  # fmt: skip

    (letter,) = system.json("dlq", "list")
    assert (letter["subject"], letter["deliveries"], letter["error"]) == (
        "intents.project.requested", 3, "boom: the handler raised"
    )  # fmt: skip
    shown = system.json("dlq", "show", str(letter["seq"]))
    assert isinstance(shown, dict)
    assert json.loads(shown["body"])["description"] == "a notes api"

    tail = system.cli("events", "tail", "--all", "--no-follow", "--json")
    assert tail.returncode == 0, tail.stderr
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    requested = next(e for e in events if e["stream"] == INTENTS.name)
    assert (requested["actor"], requested["event"]["description"]) == ("tg:1", "a notes api")
    assert {"seq", "at", "subject", "type", "project_id"} <= set(requested)


async def test_lag_without_json_prints_the_same_table(system: System) -> None:
    done = system.cli("lag")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == [
        "durable",
        "stream",
        "pending",
        "in",
        "flight",
        "concurrency",
        "redelivered",
    ]
    assert len(done.stdout.splitlines()) == len(CONSUMERS) + 1
    assert not any("\x1b" in line or "─" in line for line in done.stdout.splitlines())

    letters = system.cli("dlq", "list")
    assert letters.returncode == 0, letters.stderr
    header, row = letters.stdout.splitlines()
    columns = ["seq", "failed at", "consumer", "subject", "tries", "error"]
    assert re.split(r"\s{2,}", header) == columns
    cells = dict(zip(columns, re.split(r"\s{2,}", row.strip()), strict=True))
    assert (cells["subject"], cells["tries"]) == ("intents.project.requested", "x3")
    assert cells["error"] == "boom: the handler raised"


async def test_lag_shows_a_step_at_its_concurrency_with_the_rest_waiting(
    system: System, nc: Client
) -> None:
    """The deployer's durable as its process applies it with concurrency 1, three deploys
    requested: the server hands out one, the other two wait, and `lag` says so."""
    jsm = nc.jsm()
    await apply_streams(jsm)
    await apply_consumers(jsm, (with_concurrency(DEPLOYER, 1),))
    js = nc.jetstream()
    for _ in range(3):
        await js.publish(DEPLOYER.subjects[0], b"{}", stream=DEPLOYER.stream.name)
    worker = await js.pull_subscribe_bind(durable=DEPLOYER.durable, stream=DEPLOYER.stream.name)
    (held,) = await worker.fetch(1, timeout=10)
    with pytest.raises(nats.errors.TimeoutError):  # the one slot is taken
        await worker.fetch(1, timeout=1)

    table = system.cli("lag")
    assert table.returncode == 0, table.stderr
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith("deployer "))
    assert row[:6] == ["deployer", DEPLOYER.stream.name, "2", "1", "1", "0"]
    (deployer,) = (r for r in system.json("lag") if r["durable"] == DEPLOYER.durable)
    assert (deployer["pending"], deployer["ack_pending"], deployer["concurrency"]) == (2, 1, 1)

    await held.ack_sync()
    await worker.fetch(1, timeout=10)  # the freed slot goes to the next waiting deploy
    (deployer,) = (r for r in system.json("lag") if r["durable"] == DEPLOYER.durable)
    assert (deployer["pending"], deployer["ack_pending"], deployer["concurrency"]) == (1, 1, 1)
