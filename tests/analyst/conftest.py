"""Analyst fixtures: a checkpointer on a fresh PostgreSQL database, a scripted LLM provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from consumers.analyst.checkpointer import postgres_checkpointer
from infra.llm import build_chat_model
from infra.settings import LLMSettings
from tests.fakes.openai_server import ScriptedOpenAI

PROVIDER_KEY = "sk-test-provider-key-0123456789"


@pytest.fixture
async def checkpointer(database_url: str) -> AsyncIterator[AsyncPostgresSaver]:
    async with postgres_checkpointer(database_url) as saver:
        yield saver


@pytest.fixture
def openai_server() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture
def llm_settings(openai_server: ScriptedOpenAI) -> LLMSettings:
    return LLMSettings(
        provider="openai",
        base_url=openai_server.base_url,
        model="scripted-model",
        prompt_cost_per_1k=0.5,
        completion_cost_per_1k=1.5,
    )


@pytest.fixture
def chat_model(llm_settings: LLMSettings) -> BaseChatModel:
    model = build_chat_model(llm_settings, PROVIDER_KEY)
    assert model is not None
    return model
