"""`orchestrator change` as an operator runs it: a subprocess against real PostgreSQL, NATS and
OpenBao, reading what it prints and what reaches the INTENTS stream."""

from __future__ import annotations

import json

from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import ChangeRequested
from contracts.topology import INTENTS
from infra.db.models import ProjectRevision, ProjectState, RevisionStatus
from infra.stack.openbao_server import BootstrappedOpenBao
from tests.telegram.conftest import SeedProject
from tests.telegram.test_secrets import AWS_KEY
from tests.telegram.test_users_cli import cli_for


async def changes_on_stream(nc: Client) -> int:
    info = await nc.jsm().stream_info(INTENTS.name, subjects_filter=ChangeRequested.TYPE)
    return sum((info.state.subjects or {}).values())


async def test_change_publishes_the_intent_for_a_live_project(
    bus_url: str,
    database_url: str,
    openbao: BootstrappedOpenBao,
    nc: Client,
    seed_project: SeedProject,
) -> None:
    cli = cli_for(bus_url, database_url, openbao)
    project = await seed_project("telegram:4242", state=ProjectState.ACTIVE, name="tally")

    result = await cli("change", "tally", "add contacts", "--user", "ops")

    assert result.code == 0, result.err
    assert "change sent for project tally" in result.out
    assert "orchestrator status tally" in result.out
    msg = await nc.jsm().get_last_msg(INTENTS.name, ChangeRequested.TYPE)
    event = json.loads(msg.data or b"{}")
    assert (event["project_id"], event["change"], event["source"]) == (
        str(project.id),
        "add contacts",
        "cli",
    )
    assert event["user_id"] == "cli:ops"


async def test_change_refuses_with_the_reason_and_publishes_nothing(
    bus_url: str,
    database_url: str,
    openbao: BootstrappedOpenBao,
    nc: Client,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    cli = cli_for(bus_url, database_url, openbao)
    await seed_project("telegram:4242", state=ProjectState.BUILDING, name="young")
    busy = await seed_project("telegram:4242", state=ProjectState.ACTIVE, name="busy")
    async with sessionmaker() as session, session.begin():
        session.add(
            ProjectRevision(
                project_id=busy.id,
                number=2,
                status=RevisionStatus.SPECIFYING,
                change="add notes",
                answers=[],
                summary="",
            )
        )
    before = await changes_on_stream(nc)

    young = await cli("change", "young", "add contacts")
    in_flight = await cli("change", "busy", "add contacts")
    leaked = await cli("change", "busy", f"use {AWS_KEY}")
    unknown = await cli("change", "nosuch", "add contacts")

    assert (young.code, in_flight.code, leaked.code, unknown.code) == (1, 1, 1, 1)
    assert "young is building: only a live project" in young.err
    assert "revision 2 of project busy is still in progress (specifying)" in in_flight.err
    assert "contains a credential (AWS Access Key)" in leaked.err and AWS_KEY not in leaked.err
    assert "no project matches 'nosuch'" in unknown.err
    assert await changes_on_stream(nc) == before
