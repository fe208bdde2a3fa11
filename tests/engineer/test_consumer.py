"""The engineer process end to end: real nats-server, PostgreSQL, git daemon, the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.js.client import JetStreamContext
from sqlalchemy import select

from consumers.engineer.app import build_app
from consumers.engineer.settings import EngineerSettings
from contracts import events as ev
from contracts.envelope import Event
from infra.bus.codec import decode
from infra.bus.publisher import JetStreamPublisher
from infra.db.models import LlmUsage
from infra.db.session import make_engine, make_sessionmaker
from infra.settings import LLMSettings, Settings
from infra.stack.nats_server import NatsServer
from tests.engineer.conftest import BROKEN_FILES, SERVICE_FILES, RepoFactory, code_requested
from tests.engineer.test_langgraph_coder import RIGHT_CALC
from tests.fakes.openai_server import Reply, ScriptedOpenAI

PROVIDER_KEY = "sk-engineer-provider-key-42"
Running = tuple[JetStreamPublisher, Callable[[], Awaitable[Event]]]


@asynccontextmanager
async def engineer_process(
    tmp_path: Path, database_url: str, llm: LLMSettings, coder_llm: LLMSettings | None = None
) -> AsyncIterator[Running]:
    """An engineer serving on its own nats-server; yields a publisher and the next outcome."""
    with NatsServer(tmp_path / "nats") as server:
        settings = Settings(
            nats={"url": server.url},
            database={"url": database_url, "pool_size": 5},
            consumer={"backoff_seconds": [0.2], "heartbeat_seconds": 1.0},
            llm=llm,
            coder_llm=coder_llm,
        )

        async def provider_key() -> str:
            return PROVIDER_KEY

        app = build_app(
            settings,
            engineer_settings=EngineerSettings(workspace_root=tmp_path),
            api_key_source=provider_key,
        )
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop))
        nc = await nats.connect(server.url)
        try:
            while app.publisher is None:  # streams exist once the app has started
                await asyncio.sleep(0.05)
            outcomes: JetStreamContext.PushSubscription = await nc.jetstream().subscribe(
                "project.code.>", ordered_consumer=True
            )

            async def next_outcome() -> Event:
                while True:
                    msg = await outcomes.next_msg(timeout=60)
                    event = decode(msg.subject, msg.data, msg.headers)
                    if not isinstance(event, ev.CodeRequested):
                        return event

            yield JetStreamPublisher.from_client(nc), next_outcome
        finally:
            stop.set()
            await serving
            await nc.close()


async def usage_rows(database_url: str) -> list[LlmUsage]:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return list((await session.scalars(select(LlmUsage).order_by(LlmUsage.id))).all())
    finally:
        await engine.dispose()


async def test_offline_verifies_the_scaffold_over_the_bus(
    tmp_path: Path, migrated_url: str, make_repo: RepoFactory
) -> None:
    url, base = make_repo(SERVICE_FILES)
    async with engineer_process(tmp_path, migrated_url, LLMSettings()) as (publish, outcome):
        request = code_requested(url, base)
        await publish.publish(request)
        generated = await outcome()
    assert isinstance(generated, ev.CodeGenerated)
    assert (generated.commit, generated.mode, generated.tests_passed) == (base, "offline", 2)
    assert (generated.causation_id, generated.actor) == (request.event_id, "engineer")
    assert await usage_rows(migrated_url) == []


async def test_llm_mode_pushes_the_fix_and_records_usage(
    tmp_path: Path, migrated_url: str, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    with ScriptedOpenAI() as provider:
        provider.replies(
            Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC},
                            prompt_tokens=2000, completion_tokens=100),
            Reply.text("Implemented subtract", prompt_tokens=2100, completion_tokens=10),
        )
        llm = LLMSettings(
            provider="openai", base_url=provider.base_url, model="scripted-model",
            prompt_cost_per_1k=0.25, completion_cost_per_1k=1.0,
        )
        async with engineer_process(tmp_path, migrated_url, llm) as (publish, outcome):
            request = code_requested(url, base)
            await publish.publish(request)
            generated = await outcome()
    assert isinstance(generated, ev.CodeGenerated)
    assert (generated.mode, generated.iterations, generated.tests_passed) == ("llm", 1, 4)
    assert generated.commit != base
    assert PROVIDER_KEY not in provider.raw_bodies()

    # One row per call, written by the metering proxy as each call returned.
    rows = await usage_rows(migrated_url)
    assert {(r.project_id, r.stage, r.model, r.event_id) for r in rows} == {
        (request.project_id, "engineer", "scripted-model", request.event_id)
    }
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [(2000, 100), (2100, 10)]
    assert float(sum(r.cost_usd for r in rows)) == pytest.approx(
        4100 * 0.25 / 1000 + 110 * 1.0 / 1000
    )


async def test_with_coder_settings_the_engineer_calls_the_coder_model_not_the_analysts(
    tmp_path: Path, migrated_url: str, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    with ScriptedOpenAI() as analyst_provider, ScriptedOpenAI() as coder_provider:
        coder_provider.replies(
            Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC},
                            prompt_tokens=1000, completion_tokens=100),
            Reply.text("Implemented subtract", prompt_tokens=1000, completion_tokens=10),
        )
        analyst = LLMSettings(
            provider="openai", base_url=analyst_provider.base_url, model="analyst-model",
            prompt_cost_per_1k=0.25, completion_cost_per_1k=1.0,
        )
        # Only what differs: the provider stays the analyst's (the key comes from the test).
        coder = LLMSettings(
            base_url=coder_provider.base_url, model="coder-model",
            prompt_cost_per_1k=0.5, completion_cost_per_1k=2.0,
        )
        async with engineer_process(tmp_path, migrated_url, analyst, coder) as (publish, outcome):
            request = code_requested(url, base)
            await publish.publish(request)
            generated = await outcome()
    assert isinstance(generated, ev.CodeGenerated), generated
    assert analyst_provider.requests == []
    assert [body["model"] for body in coder_provider.requests] == ["coder-model"] * 2
    assert PROVIDER_KEY not in coder_provider.raw_bodies()
    rows = await usage_rows(migrated_url)
    assert [(r.stage, r.model) for r in rows] == [("engineer", "coder-model")] * 2
    assert float(sum(r.cost_usd for r in rows)) == pytest.approx(
        2000 * 0.5 / 1000 + 110 * 2.0 / 1000
    )


async def test_a_broken_scaffold_is_code_failed_not_a_dead_letter(
    tmp_path: Path, migrated_url: str, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    async with engineer_process(tmp_path, migrated_url, LLMSettings()) as (publish, outcome):
        await publish.publish(code_requested(url, base))
        failed = await outcome()
    assert isinstance(failed, ev.CodeFailed)
    assert "test_subtract" in failed.reason
