"""The offline analyst through the graph and a real PostgreSQL checkpointer."""

from __future__ import annotations

import uuid

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from consumers.analyst.checkpointer import postgres_checkpointer
from consumers.analyst.graph import build_graph
from consumers.analyst.service import AnalystService, QuestionOutcome, SpecOutcome
from contracts.spec import ServiceKind


def offline_service(checkpointer: AsyncPostgresSaver) -> AnalystService:
    return AnalystService(build_graph(None, checkpointer), offline=True)


async def thread_values(checkpointer: AsyncPostgresSaver, flow: uuid.UUID) -> dict[str, object]:
    """What the checkpoint holds for a flow, read through a graph of its own."""
    state = await build_graph(None, checkpointer).aget_state(
        {"configurable": {"thread_id": str(flow)}}
    )
    return dict(state.values)


async def test_english_description_becomes_a_spec(checkpointer: AsyncPostgresSaver) -> None:
    service = offline_service(checkpointer)
    outcome = await service.analyse(
        uuid.uuid4(), uuid.uuid4(), "A REST API to keep my tasks and notes", ()
    )
    assert isinstance(outcome, SpecOutcome)
    assert outcome.offline
    assert outcome.calls == ()
    assert outcome.spec.kinds == (ServiceKind.HTTP,)
    assert {e.name for e in outcome.spec.entities} == {"Task", "Note"}


async def test_russian_description_becomes_a_spec(checkpointer: AsyncPostgresSaver) -> None:
    service = offline_service(checkpointer)
    outcome = await service.analyse(
        uuid.uuid4(), uuid.uuid4(), "Нужен телеграм-бот для напоминаний", ()
    )
    assert isinstance(outcome, SpecOutcome)
    assert outcome.spec.language == "ru"
    assert outcome.spec.slug == "napominaniya-bot"
    assert outcome.spec.entities[0].name == "Reminder"


async def test_question_then_answer_resumes_the_same_thread(
    checkpointer: AsyncPostgresSaver,
) -> None:
    service = offline_service(checkpointer)
    project, flow = uuid.uuid4(), uuid.uuid4()

    question = await service.analyse(project, flow, "сделай бота", ())
    assert isinstance(question, QuestionOutcome)
    assert question.offline
    assert question.question.startswith("[offline mode] ")
    # A redelivered request gets the same question back.
    assert await service.analyse(project, flow, "сделай бота", ()) == question

    outcome = await service.analyse(project, flow, "сделай бота", ("учёт расходов",))
    assert isinstance(outcome, SpecOutcome)
    assert outcome.spec.entities[0].name == "Expense"
    assert outcome.spec.kinds == (ServiceKind.TELEGRAM_BOT,)

    values = await thread_values(checkpointer, flow)
    assert values["questions"] == [question.question]
    assert values["answers"] == ["учёт расходов"]


async def test_two_thin_answers_end_in_a_spec_with_defaults(
    checkpointer: AsyncPostgresSaver,
) -> None:
    service = offline_service(checkpointer)
    project, flow = uuid.uuid4(), uuid.uuid4()
    assert isinstance(await service.analyse(project, flow, "make me a bot", ()), QuestionOutcome)
    second = await service.analyse(project, flow, "make me a bot", ("no idea",))
    assert isinstance(second, QuestionOutcome)
    assert second.question.startswith("[offline mode] That is still not enough")
    outcome = await service.analyse(project, flow, "make me a bot", ("no idea", "whatever"))
    assert isinstance(outcome, SpecOutcome)
    assert "defaults were assumed" in outcome.spec.summary


async def test_checkpoint_survives_a_new_process(database_url: str) -> None:
    """A redelivery to another replica (new pool, new graph) resumes the paused question."""
    project, flow = uuid.uuid4(), uuid.uuid4()
    async with postgres_checkpointer(database_url) as first:
        asked = await offline_service(first).analyse(project, flow, "make me a service", ())
    assert isinstance(asked, QuestionOutcome)

    async with postgres_checkpointer(database_url) as second:
        service = offline_service(second)
        outcome = await service.analyse(
            project, flow, "make me a service", ("an HTTP API for orders of my shop",)
        )
        values = await thread_values(second, flow)
    assert isinstance(outcome, SpecOutcome)
    assert {e.name for e in outcome.spec.entities} == {"Order", "Product"}
    assert values["questions"] == [asked.question]
