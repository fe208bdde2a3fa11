"""`orchestrator users ...`, `secrets set` and `request` as an operator runs them: a subprocess
against real PostgreSQL, NATS and OpenBao, reading what it prints."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import Project, User, UserRole
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.vault import VaultClient, project_secret_path
from producers.access import Directory, InvalidInvite
from tests.telegram.conftest import SeedProject
from tests.telegram.test_secrets import AWS_KEY, bus_messages

ROOT = Path(__file__).resolve().parents[2]
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDl0Q4vJp7T1kWm2HFeY9ll7Z0fX3b5l0a4s4bWq2N6cwAAAJgAAAAAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Cli:
    env: dict[str, str]

    async def __call__(self, *args: str, stdin: str = "") -> Result:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "producers.cli",
            *args,
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())


def cli_for(bus_url: str, database_url: str, openbao: BootstrappedOpenBao) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(
        ORCH_NATS__URL=bus_url,
        ORCH_DATABASE__URL=database_url,
        ORCH_VAULT__ADDR=openbao.addr,
        ORCH_VAULT__TOKEN=openbao.root_token,
    )
    return Cli(env)


async def test_users_commands_manage_people_roles_invites_and_budgets(
    bus_url: str,
    database_url: str,
    openbao: BootstrappedOpenBao,
    sessionmaker: async_sessionmaker[AsyncSession],
    seed_project: SeedProject,
) -> None:
    cli = cli_for(bus_url, database_url, openbao)
    project = await seed_project("telegram:4242", name="ledger")

    added = await cli("users", "add", "4242")
    admin = await cli("users", "add", "telegram:99", "--role", "admin")
    blocked = await cli("users", "block", "4242")
    listed = await cli("users", "list")
    unblocked = await cli("users", "unblock", "4242")
    promoted = await cli("users", "set-role", "4242", "admin")
    budget = await cli("users", "set-budget", "4242", "12.50")
    project_budget = await cli("users", "set-project-budget", "ledger", "3")
    as_json = await cli("users", "list", "--json")
    invite = await cli("users", "invite", "--bot", "orch_bot", "--hours", "2")
    unknown = await cli("users", "block", "telegram:31337")
    bad_amount = await cli("users", "set-budget", "4242", "lots")

    assert added.out.strip() == "telegram:4242: member, active", added
    assert admin.out.strip() == "telegram:99: admin, active"
    assert blocked.out.strip() == "telegram:4242: member, blocked"
    assert any(
        line.split()[:3] == ["telegram:4242", "member", "blocked"]
        for line in listed.out.splitlines()
    ), listed.out
    assert unblocked.out.strip() == "telegram:4242: member, active"
    assert promoted.out.strip() == "telegram:4242: admin, active"
    assert budget.out.strip() == "telegram:4242: monthly LLM budget $12.50"
    assert project_budget.out.strip() == f"project {project.id}: LLM budget $3.00"
    people = {p["id"]: p for p in json.loads(as_json.out)}
    assert people["telegram:4242"]["role"] == "admin"
    assert people["telegram:4242"]["llm_budget_usd_month"] == "12.500000"
    assert people["telegram:4242"]["added_by"].startswith("cli:")
    code, link, note = invite.out.strip().splitlines()
    assert link == f"https://t.me/orch_bot?start={code}"
    assert "one-time member invite, valid for 2 hours" in note
    assert unknown.code == 1 and "no user telegram:31337: add them first" in unknown.err
    assert bad_amount.code == 2 and "not an amount in USD" in bad_amount.err

    # The printed code is a working invite (stored hashed: the database never holds it).
    person = await Directory(sessionmaker).redeem_invite(code, "telegram:5151")
    assert person.role == UserRole.MEMBER
    async with sessionmaker() as session:
        user = await session.get(User, "telegram:4242")
        row = await session.get(Project, project.id)
    assert user is not None and user.llm_budget_usd_month == Decimal("12.5")
    assert row is not None and row.llm_budget_usd == Decimal("3")


async def test_an_expired_invite_is_refused(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    directory = Directory(sessionmaker)
    await directory.seed_admins(["telegram:1"])
    admin = await directory.person("telegram:1")
    assert admin is not None
    code = await directory.create_invite(admin, ttl=timedelta(seconds=-1))

    with pytest.raises(InvalidInvite, match="unknown, used or expired"):
        await directory.redeem_invite(code, "telegram:2")
    assert await directory.person("telegram:2") is None


async def test_secrets_set_keeps_a_multi_line_key_whole(
    bus_url: str, database_url: str, openbao: BootstrappedOpenBao, seed_project: SeedProject
) -> None:
    cli = cli_for(bus_url, database_url, openbao)
    project = await seed_project("telegram:4242", name="keys")

    stored = await cli("secrets", "set", "keys", "DEPLOY_KEY", stdin=PEM)
    one_line = await cli("secrets", "set", "keys", "API_TOKEN", stdin="abc123\n")

    assert stored.code == 0, stored.err
    assert "-----" not in stored.out and "b3Bl" not in stored.out
    root = VaultClient(openbao.addr, token=openbao.root_token)
    path = project_secret_path(str(project.id), "DEPLOY_KEY")
    assert await root.read_secret(path) == {"value": PEM}
    assert one_line.code == 0, one_line.err
    token_path = project_secret_path(str(project.id), "API_TOKEN")
    assert await root.read_secret(token_path) == {"value": "abc123"}


async def test_request_and_answer_refuse_a_credential_before_publishing(
    bus_url: str,
    database_url: str,
    openbao: BootstrappedOpenBao,
    nc: Client,
    seed_project: SeedProject,
) -> None:
    cli = cli_for(bus_url, database_url, openbao)
    await seed_project("telegram:4242", name="backup")
    before = await bus_messages(nc)

    request = await cli("request", f"A backup service with key {AWS_KEY}")
    answer = await cli("answer", "backup", f"the key is {AWS_KEY}")

    for result in (request, answer):
        assert result.code == 1
        assert "contains a credential (AWS Access Key)" in result.err
        assert "orchestrator secrets set" in result.err
        assert AWS_KEY not in result.err
    assert await bus_messages(nc) == before
