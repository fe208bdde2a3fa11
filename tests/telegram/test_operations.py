"""`/redeploy`, `/restart`, `/rollback`, `/retry` in the chat, and `orchestrator redeploy|restart|
rollback|retry` on the host: what the person reads, and the intent each puts on the stream."""

from __future__ import annotations

import uuid

from nats.aio.client import Client
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import (
    ProjectRedeployRequested,
    ProjectRestartRequested,
    ProjectRetryRequested,
    ProjectRollbackRequested,
)
from infra.db.models import Project, ProjectState
from infra.stack.openbao_server import BootstrappedOpenBao
from producers.intents import OperationIntent
from tests.telegram.conftest import ChatUser, SeedProject
from tests.telegram.test_bot import last_intent
from tests.telegram.test_secrets import bus_messages
from tests.telegram.test_users_cli import cli_for

LIVE, PREVIOUS = "b" * 40, "a" * 40


async def _record(
    sessionmaker: async_sessionmaker[AsyncSession], project_id: uuid.UUID, **values: object
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Project).where(Project.id == project_id).values(**values))


async def test_bot_commands_publish_the_operations_of_a_live_and_a_failed_project(
    chat: ChatUser,
    nc: Client,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    live = await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="bot-live")
    await _record(
        sessionmaker, live.id, code_commit=LIVE, live_commit=LIVE, previous_commit=PREVIOUS
    )
    failed = await seed_project(chat.user_id, state=ProjectState.FAILED, name="bot-failed")

    for command, event_type, project in (
        ("/redeploy bot-live", ProjectRedeployRequested, live),
        ("/restart bot-live", ProjectRestartRequested, live),
        ("/rollback bot-live", ProjectRollbackRequested, live),
        ("/retry bot-failed", ProjectRetryRequested, failed),
    ):
        reply = await chat.say(command)
        operation = command.split()[0][1:]
        assert reply == (
            f"{operation.capitalize()} of project {project.slug} ({str(project.id)[:8]}) "
            "requested; I'll report here."
        ), reply
        event, msg_id = await last_intent(nc, event_type)
        assert isinstance(event, OperationIntent)
        assert (event.project_id, event.user_id) == (project.id, chat.user_id)
        assert event.correlation_id == project.flow_id
        assert msg_id == str(event.event_id)


async def test_bot_refuses_what_the_project_cannot_do_and_publishes_nothing(
    chat: ChatUser,
    nc: Client,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    live = await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="bot-once")
    await _record(sessionmaker, live.id, code_commit=LIVE, live_commit=LIVE)
    someone_else = await seed_project("telegram:999001", state=ProjectState.FAILED, name="theirs")
    before = await bus_messages(nc)

    assert "/rollback <project>" in await chat.say("/rollback")
    assert "no previous release" in await chat.say("/rollback bot-once")
    assert "not failed" in await chat.say("/retry bot-once")
    assert "I know no project of yours matching 'theirs'" in await chat.say(
        f"/retry {someone_else.slug}"
    )
    assert await bus_messages(nc) == before


async def test_cli_operations_print_the_request_or_the_refusal(
    bus_url: str,
    database_url: str,
    openbao: BootstrappedOpenBao,
    nc: Client,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    cli = cli_for(bus_url, database_url, openbao)
    live = await seed_project("telegram:999002", state=ProjectState.ACTIVE, name="cli-live")
    await _record(sessionmaker, live.id, code_commit=LIVE, live_commit=LIVE)

    redeploy = await cli("redeploy", "cli-live", "--commit", PREVIOUS)
    restart = await cli("restart", str(live.id)[:8])
    rollback = await cli("rollback", "cli-live")
    retry = await cli("retry", "cli-live")
    bad_commit = await cli("redeploy", "cli-live", "--commit", "main")

    event, _ = await last_intent(nc, ProjectRedeployRequested)
    assert redeploy.code == 0, redeploy
    assert redeploy.out.splitlines() == [
        f"redeploy requested for project {live.id} (event {event.event_id})",
        f"follow it with: orchestrator status {live.id}",
    ]
    assert (event.project_id, event.commit) == (live.id, PREVIOUS)
    assert event.user_id.startswith("cli:")
    restarted, _ = await last_intent(nc, ProjectRestartRequested)
    assert restart.code == 0
    assert restart.out.startswith(f"restart requested for project {live.id} (event ")
    assert restarted.project_id == live.id
    assert rollback.code == 1
    assert "orchestrator rollback:" in rollback.err and "no previous release" in rollback.err
    assert retry.code == 1 and "is active, not failed" in retry.err
    assert bad_commit.code == 2 and "not a full 40-hex commit id" in bad_commit.err
