"""Change requests in the bot as a user meets them: `/change` and a reply to the project's
`/status` card, over real long polling, the real INTENTS stream and real PostgreSQL."""

from __future__ import annotations

from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import ChangeRequested, ClarificationAnswered
from contracts.topology import INTENTS
from infra.db.models import ProjectRevision, ProjectState, RevisionStatus
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.telegram.conftest import ChatUser, SeedProject
from tests.telegram.test_bot import last_intent

AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"


async def changes_on_stream(nc: Client) -> int:
    info = await nc.jsm().stream_info(INTENTS.name, subjects_filter=ChangeRequested.TYPE)
    return sum((info.state.subjects or {}).values())


async def test_change_command_sends_the_change_of_a_live_project(
    chat: ChatUser, nc: Client, seed_project: SeedProject
) -> None:
    project = await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="ledger")

    assert "Usage: /change" in await chat.say("/change ledger")
    reply = await chat.say("/change ledger add an endpoint that returns totals per month")

    assert reply.startswith("Change sent to project ledger")
    assert "keeps serving until the new one is live" in reply
    event, _ = await last_intent(nc, ChangeRequested)
    assert (event.project_id, event.change, event.user_id, event.source) == (
        project.id,
        "add an endpoint that returns totals per month",
        chat.user_id,
        "telegram",
    )
    assert event.correlation_id == project.flow_id


async def test_a_reply_to_the_status_card_is_a_change_request(
    chat: ChatUser, nc: Client, seed_project: SeedProject, telegram: FakeTelegramAPI
) -> None:
    project = await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="shop")
    card = await chat.say("/status shop")
    assert f"Id: {project.id}" in card
    card_id = telegram.message_id_of(chat.chat_id, card)
    assert card_id is not None

    reply = await chat.say("add contacts", reply_to=card_id)

    assert reply.startswith("Change sent to project shop")
    event, _ = await last_intent(nc, ChangeRequested)
    assert (event.project_id, event.change) == (project.id, "add contacts")


async def test_changes_the_project_cannot_take_are_refused_in_the_chat(
    chat: ChatUser,
    nc: Client,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await seed_project(chat.user_id, state=ProjectState.BUILDING, name="busy")
    changing = await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="changing")
    async with sessionmaker() as session, session.begin():
        session.add(
            ProjectRevision(
                project_id=changing.id,
                number=2,
                status=RevisionStatus.DEPLOYING,
                change="add notes",
                answers=[],
                summary="",
            )
        )
    before = await changes_on_stream(nc)

    busy = await chat.say("/change busy add contacts")
    in_flight = await chat.say("/change changing add contacts")
    unknown = await chat.say("/change nosuch add contacts")

    assert "now: project busy is building: only a live project" in busy
    assert "revision 2 of project changing is still in progress (deploying)" in in_flight
    assert "I know no project of yours matching 'nosuch'" in unknown
    assert await changes_on_stream(nc) == before


async def test_a_change_with_a_credential_is_deleted_and_refused(
    chat: ChatUser, nc: Client, seed_project: SeedProject
) -> None:
    await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="keys")
    before = await changes_on_stream(nc)

    reply = await chat.say(f"/change keys use the AWS key {AWS_KEY}")

    assert AWS_KEY not in reply and "/secret" in reply
    assert await changes_on_stream(nc) == before


async def test_a_question_about_a_change_is_answered_by_plain_text(
    chat: ChatUser,
    nc: Client,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The project stays active while the analyst asks about a change; the user's next plain
    message answers that question instead of starting a new project."""
    project = await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="asking")
    async with sessionmaker() as session, session.begin():
        session.add(
            ProjectRevision(
                project_id=project.id,
                number=2,
                status=RevisionStatus.AWAITING_ANSWER,
                change="add a command",
                answers=[],
                summary="",
            )
        )

    reply = await chat.say("call it stats")

    assert "Your answer went to project asking" in reply
    event, _ = await last_intent(nc, ClarificationAnswered)
    assert (event.project_id, event.answer) == (project.id, "call it stats")
