"""The LLM metering proxy against a scripted provider and a real PostgreSQL ledger.

The clients are the real ones (langchain's ChatOpenAI over real HTTP), so what is proven is
what a coding run would see: the token gate, the key swap, one committed `llm_usage` row per
call while the run is still going, and the refusal once a budget or the time limit is spent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.engineer.llm_proxy.ledger import DatabaseLedger
from consumers.engineer.llm_proxy.run import ProxyLauncher
from infra.db.models import LlmUsage, Project, User
from infra.db.session import make_engine, make_sessionmaker
from infra.settings import LLMSettings, QuotaSettings
from tests.fakes.openai_server import Reply, ScriptedOpenAI

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

PROVIDER_KEY = "sk-proxy-provider-key-77"
#: $1 per 1,000 tokens either way, so 1,000-token replies cost exactly $1 each.
PRICED = {"prompt_cost_per_1k": 1.0, "completion_cost_per_1k": 1.0}


async def provider_key() -> str:
    return PROVIDER_KEY


@pytest.fixture
async def sessions(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_url, pool_size=3)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def provider() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


async def add_project(
    sessions: async_sessionmaker[AsyncSession],
    user_id: str,
    *,
    project_budget: Decimal | None = None,
    user_budget: Decimal | None = None,
) -> uuid.UUID:
    project_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        if await session.get(User, user_id) is None:
            session.add(User(id=user_id, llm_budget_usd_month=user_budget))
            await session.flush()
        session.add(
            Project(
                id=project_id,
                flow_id=uuid.uuid4(),
                user_id=user_id,
                description="d",
                llm_budget_usd=project_budget,
            )
        )
    return project_id


def ledger(sessions: async_sessionmaker[AsyncSession], project_id: uuid.UUID) -> DatabaseLedger:
    return DatabaseLedger(
        sessions,
        project_id=project_id,
        event_id=uuid.uuid4(),
        stage="engineer",
        quotas=QuotaSettings(),
    )


def chat(base_url: str, token: str, **options: object) -> ChatOpenAI:
    from langchain_openai import ChatOpenAI  # on demand, as the processes import it

    return ChatOpenAI(
        model="coder-model",
        base_url=f"{base_url}/v1",
        api_key=SecretStr(token),
        max_retries=0,
        **options,
    )


async def rows(sessions: async_sessionmaker[AsyncSession], project_id: uuid.UUID) -> list[LlmUsage]:
    async with sessions() as session:
        query = select(LlmUsage).where(LlmUsage.project_id == project_id).order_by(LlmUsage.id)
        return list((await session.scalars(query)).all())


async def test_a_wrong_token_is_refused_and_nothing_reaches_the_provider(
    sessions: async_sessionmaker[AsyncSession], provider: ScriptedOpenAI
) -> None:
    project_id = await add_project(sessions, "telegram:1")
    launcher = ProxyLauncher(
        LLMSettings(provider="openai", base_url=provider.base_url), provider_key
    )
    async with launcher.on_loopback(ledger(sessions, project_id)) as run:
        with pytest.raises(openai.AuthenticationError, match="run's token"):
            await chat(run.base_url or "", "not-the-token").ainvoke("hi")
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{run.base_url}/v1/chat/completions", json={})
        assert answer.status_code == 401
    assert provider.requests == []
    assert await rows(sessions, project_id) == []


async def test_each_call_is_metered_and_committed_while_the_run_goes_on(
    sessions: async_sessionmaker[AsyncSession], provider: ScriptedOpenAI
) -> None:
    project_id = await add_project(sessions, "telegram:2")
    provider.replies(
        Reply.text("one", prompt_tokens=1000, completion_tokens=200),
        Reply.text("two, streamed", prompt_tokens=300, completion_tokens=40),
    )
    settings = LLMSettings(
        provider="openai", base_url=provider.base_url, model="coder-model", **PRICED
    )
    async with ProxyLauncher(settings, provider_key).on_loopback(
        ledger(sessions, project_id)
    ) as run:
        model = chat(run.base_url or "", run.token)
        await model.ainvoke([HumanMessage("first")])
        # Committed by the proxy itself: another session sees it before the run ends.
        [first] = await rows(sessions, project_id)
        assert (first.prompt_tokens, first.completion_tokens) == (1000, 200)
        assert first.cost_usd == Decimal("1.2")
        streamed = "".join(
            [
                str(chunk.content)
                async for chunk in chat(run.base_url or "", run.token, streaming=True).astream(
                    "second"
                )
            ]
        )
        assert streamed == "two, streamed"
        assert run.proxy.calls == 2
    first, second = await rows(sessions, project_id)
    assert (second.prompt_tokens, second.completion_tokens, second.stage) == (300, 40, "engineer")
    assert first.event_id == second.event_id
    # The provider saw the key from Vault; the client only ever had the run's token.
    assert {h["Authorization"] for h in provider.headers} == {f"Bearer {PROVIDER_KEY}"}
    assert run.token not in provider.raw_bodies()


async def test_calls_past_the_project_budget_are_refused_with_the_reason(
    sessions: async_sessionmaker[AsyncSession], provider: ScriptedOpenAI
) -> None:
    project_id = await add_project(sessions, "telegram:3", project_budget=Decimal("1.50"))
    provider.respond_with(lambda _body: Reply.text("ok", prompt_tokens=1000, completion_tokens=0))
    settings = LLMSettings(provider="openai", base_url=provider.base_url, **PRICED)
    async with ProxyLauncher(settings, provider_key).on_loopback(
        ledger(sessions, project_id)
    ) as run:
        model = chat(run.base_url or "", run.token)
        await model.ainvoke("one")  # $1.00 spent
        await model.ainvoke("two")  # $2.00: this call crosses the budget
        with pytest.raises(openai.APIStatusError) as refused:
            await model.ainvoke("three")
    assert refused.value.status_code == 402
    reason = (
        "LLM budget of $1.50 for this project is spent ($2.00 used); an admin can raise it "
        f"with `orchestrator users set-project-budget {project_id} USD`"
    )
    assert reason in str(refused.value)
    assert run.proxy.refused == reason
    assert len(provider.requests) == 2
    assert len(await rows(sessions, project_id)) == 2


async def test_the_users_monthly_budget_spans_their_projects(
    sessions: async_sessionmaker[AsyncSession], provider: ScriptedOpenAI
) -> None:
    first = await add_project(sessions, "telegram:4", user_budget=Decimal("1"))
    second = await add_project(sessions, "telegram:4")
    provider.respond_with(lambda _body: Reply.text("ok", prompt_tokens=1000, completion_tokens=0))
    launcher = ProxyLauncher(
        LLMSettings(provider="openai", base_url=provider.base_url, **PRICED), provider_key
    )
    async with launcher.on_loopback(ledger(sessions, first)) as run:
        await chat(run.base_url or "", run.token).ainvoke("spend a dollar")
    async with launcher.on_loopback(ledger(sessions, second)) as run:
        with pytest.raises(openai.APIStatusError, match="set-budget telegram:4 USD"):
            await chat(run.base_url or "", run.token).ainvoke("one more")
    assert run.proxy.refused is not None
    assert "LLM budget of $1.00 per month for user telegram:4 is spent" in run.proxy.refused
    assert len(provider.requests) == 1


async def test_the_run_time_limit_refuses_further_calls(
    sessions: async_sessionmaker[AsyncSession], provider: ScriptedOpenAI
) -> None:
    project_id = await add_project(sessions, "telegram:5")
    launcher = ProxyLauncher(
        LLMSettings(provider="openai", base_url=provider.base_url),
        provider_key,
        time_limit_seconds=0.0,
    )
    async with launcher.on_loopback(ledger(sessions, project_id)) as run:
        with pytest.raises(openai.APIStatusError, match="time limit of 0 s"):
            await chat(run.base_url or "", run.token).ainvoke("too late")
    assert provider.requests == []


async def test_the_socket_serves_only_the_token_holder_and_is_removed(
    sessions: async_sessionmaker[AsyncSession], provider: ScriptedOpenAI, tmp_path: Path
) -> None:
    project_id = await add_project(sessions, "telegram:6")
    provider.replies(Reply.text("over the socket", prompt_tokens=5, completion_tokens=5))
    launcher = ProxyLauncher(
        LLMSettings(provider="openai", base_url=provider.base_url), provider_key
    )
    async with launcher.on_socket(tmp_path / "sock", ledger(sessions, project_id)) as run:
        assert run.socket_path is not None
        transport = httpx.AsyncHTTPTransport(uds=str(run.socket_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            refused = await client.post(
                "/v1/chat/completions", json=body, headers={"Authorization": "Bearer guess"}
            )
            answered = await client.post(
                "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {run.token}"}
            )
    assert refused.status_code == 401
    assert answered.json()["choices"][0]["message"]["content"] == "over the socket"
    assert not run.socket_path.exists()
    assert len(await rows(sessions, project_id)) == 1
