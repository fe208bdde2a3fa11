"""The analyst process end to end: real nats-server, PostgreSQL, the runtime, scripted LLM."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import nats
from nats.js.client import JetStreamContext
from sqlalchemy import select

from consumers.analyst.app import build_app
from contracts import events as ev
from contracts.envelope import Event
from infra.bus.codec import decode
from infra.bus.publisher import JetStreamPublisher
from infra.db.models import LlmUsage
from infra.db.session import make_engine, make_sessionmaker
from infra.settings import LLMSettings, QuotaSettings, Settings
from infra.stack.nats_server import NatsServer
from tests.analyst.conftest import PROVIDER_KEY
from tests.analyst.test_llm_service import expense_spec
from tests.fakes.openai_server import Reply, ScriptedOpenAI

Running = tuple[JetStreamPublisher, Callable[[], Awaitable[Event]]]


@asynccontextmanager
async def analyst_process(
    tmp_path: Path,
    database_url: str,
    llm: LLMSettings,
    quotas: QuotaSettings | None = None,
    coder_llm: LLMSettings | None = None,
) -> AsyncIterator[Running]:
    """An analyst serving on its own nats-server; yields a publisher and the next outcome."""
    with NatsServer(tmp_path / "nats") as server:
        settings = Settings(
            nats={"url": server.url},
            database={"url": database_url, "pool_size": 5},
            consumer={"backoff_seconds": [0.2]},
            llm=llm,
            coder_llm=coder_llm,
            quotas=quotas or QuotaSettings(),
        )

        async def provider_key() -> str:
            return PROVIDER_KEY

        app = build_app(settings, api_key_source=provider_key)
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop))
        nc = await nats.connect(server.url)
        try:
            while app.publisher is None:  # streams exist once the app has started
                await asyncio.sleep(0.05)
            outcomes: JetStreamContext.PushSubscription = await nc.jetstream().subscribe(
                "project.>", ordered_consumer=True
            )

            async def next_outcome() -> Event:
                while True:
                    msg = await outcomes.next_msg(timeout=15)
                    event = decode(msg.subject, msg.data, msg.headers)
                    if not isinstance(event, ev.SpecRequested):
                        return event

            yield JetStreamPublisher.from_client(nc), next_outcome
        finally:
            stop.set()
            await serving
            await nc.close()


def spec_requested(
    flow: uuid.UUID, project: uuid.UUID, description: str, answers: tuple[str, ...] = ()
) -> ev.SpecRequested:
    return ev.SpecRequested(
        correlation_id=flow,
        actor="coordinator",
        project_id=project,
        description=description,
        answers=answers,
    )


async def usage_rows(database_url: str) -> list[LlmUsage]:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return list((await session.scalars(select(LlmUsage).order_by(LlmUsage.id))).all())
    finally:
        await engine.dispose()


async def test_offline_question_and_answer_over_the_bus(tmp_path: Path, migrated_url: str) -> None:
    flow, project = uuid.uuid4(), uuid.uuid4()
    async with analyst_process(tmp_path, migrated_url, LLMSettings()) as (publish, next_outcome):
        request = spec_requested(flow, project, "сделай бота")
        await publish.publish(request)
        asked = await next_outcome()
        assert isinstance(asked, ev.ClarificationAsked)
        assert asked.offline
        assert asked.question.startswith("[offline mode] ")
        assert (asked.causation_id, asked.correlation_id) == (request.event_id, flow)
        assert asked.actor == "analyst"

        await publish.publish(spec_requested(flow, project, "сделай бота", ("учёт расходов",)))
        ready = await next_outcome()
        assert isinstance(ready, ev.SpecReady)
        assert ready.offline
        assert ready.project_id == project
        assert ready.spec.entities[0].name == "Expense"
    assert await usage_rows(migrated_url) == []


async def test_llm_spec_over_the_bus_records_usage(tmp_path: Path, migrated_url: str) -> None:
    flow, project = uuid.uuid4(), uuid.uuid4()
    with ScriptedOpenAI() as provider, ScriptedOpenAI() as coder_provider:
        provider.replies(
            Reply.tool_call(
                "ProjectSpec", expense_spec(), prompt_tokens=2000, completion_tokens=500
            )
        )
        llm = LLMSettings(
            provider="openai",
            base_url=provider.base_url,
            model="scripted-model",
            prompt_cost_per_1k=0.25,
            completion_cost_per_1k=1.0,
        )
        # The engineer's own model (ORCH_CODER_LLM__*) is not the analyst's.
        coder = LLMSettings(base_url=coder_provider.base_url, model="coder-model")
        async with analyst_process(
            tmp_path, migrated_url, llm, coder_llm=coder
        ) as (publish, next_outcome):
            request = spec_requested(flow, project, "A bot for family expenses")
            await publish.publish(request)
            ready = await next_outcome()
    assert isinstance(ready, ev.SpecReady)
    assert not ready.offline
    assert ready.spec.slug == "family-expenses"
    assert "A bot for family expenses" in provider.prompt_text()
    assert [body["model"] for body in provider.requests] == ["scripted-model"]
    assert coder_provider.requests == []
    assert PROVIDER_KEY not in provider.raw_bodies()

    [row] = await usage_rows(migrated_url)
    assert (row.project_id, row.stage, row.model, row.event_id) == (
        project,
        "analyst",
        "scripted-model",
        request.event_id,
    )
    assert (row.prompt_tokens, row.completion_tokens) == (2000, 500)
    assert row.cost_usd == Decimal("1.000000")


async def test_a_spent_project_budget_fails_the_next_round_before_the_model_is_called(
    tmp_path: Path, migrated_url: str
) -> None:
    project = uuid.uuid4()
    with ScriptedOpenAI() as provider:
        provider.replies(
            Reply.tool_call("ProjectSpec", expense_spec(), prompt_tokens=2000,
                            completion_tokens=500)
        )
        llm = LLMSettings(provider="openai", base_url=provider.base_url,
                          prompt_cost_per_1k=0.25, completion_cost_per_1k=1.0)
        quotas = QuotaSettings(llm_usd_per_project=1.0)
        async with analyst_process(tmp_path, migrated_url, llm, quotas) as (publish, outcome):
            await publish.publish(spec_requested(uuid.uuid4(), project, "Family expenses bot"))
            assert isinstance(await outcome(), ev.SpecReady)  # this round spent $1.00
            await publish.publish(spec_requested(uuid.uuid4(), project, "Family expenses bot"))
            failed = await outcome()
    assert isinstance(failed, ev.SpecFailed)
    assert failed.reason == (
        "LLM budget of $1.00 for this project is spent ($1.00 used); an admin can raise it "
        f"with `orchestrator users set-project-budget {project} USD`"
    )
    assert len(provider.requests) == 1
