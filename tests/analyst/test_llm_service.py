"""The LLM analyst: the real ChatOpenAI client over HTTP against a scripted provider."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from consumers.analyst.graph import build_graph
from consumers.analyst.prompts import EXAMPLES, AskClarification
from consumers.analyst.service import (
    AnalystService,
    FailureOutcome,
    ProviderUnavailable,
    QuestionOutcome,
    SpecOutcome,
)
from consumers.analyst.spec_policy import enforce
from contracts.spec import PersistenceKind, ProjectSpec, ServiceKind
from infra.settings import LLMSettings
from tests.analyst.conftest import PROVIDER_KEY
from tests.fakes.openai_server import Reply, ScriptedOpenAI

DESCRIPTION = "A Telegram bot where my family records expenses and sees a monthly report"


def expense_spec(**overrides: Any) -> dict[str, Any]:
    """Arguments a model would send to the ProjectSpec tool."""
    spec: dict[str, Any] = {
        "name": "Family Expenses",
        "slug": "Family Expenses",  # not a slug: the analyst repairs it instead of retrying
        "summary": "A Telegram bot where a family records expenses and sees a monthly report.",
        "kinds": ["telegram_bot"],
        "language": "en",
        "entities": [
            {
                "name": "Expense",
                "fields": [
                    {"name": "amount", "type": "float"},
                    {"name": "category", "type": "str"},
                ],
            }
        ],
        "commands": [{"command": "/add", "description": "Add an expense"}],
        "config": [{"name": "TELEGRAM_BOT_TOKEN", "secret": True, "default": "123:abc"}],
        "acceptance_criteria": ["/add 12.5 food stores an expense"],
    }
    spec.update(overrides)
    return spec


def llm_service(
    chat_model: BaseChatModel, checkpointer: AsyncPostgresSaver, settings: LLMSettings
) -> AnalystService:
    return AnalystService(build_graph(chat_model, checkpointer), offline=False, pricing=settings)


async def test_tool_call_becomes_a_validated_spec_with_usage(
    openai_server: ScriptedOpenAI,
    chat_model: BaseChatModel,
    checkpointer: AsyncPostgresSaver,
    llm_settings: LLMSettings,
) -> None:
    openai_server.replies(
        Reply.tool_call("ProjectSpec", expense_spec(), prompt_tokens=1000, completion_tokens=200)
    )
    service = llm_service(chat_model, checkpointer, llm_settings)

    outcome = await service.analyse(uuid.uuid4(), uuid.uuid4(), DESCRIPTION, ())

    assert isinstance(outcome, SpecOutcome)
    assert not outcome.offline
    spec = outcome.spec
    assert spec.slug == "family-expenses"
    assert spec.kinds == (ServiceKind.TELEGRAM_BOT,)
    assert [c.command for c in spec.commands] == ["start", "add"]
    token = next(var for var in spec.config if var.name == "TELEGRAM_BOT_TOKEN")
    assert token.secret
    assert token.default is None
    [call] = outcome.calls
    assert (call.model, call.usage.prompt_tokens, call.usage.completion_tokens) == (
        "scripted-model",
        1000,
        200,
    )
    assert call.cost_usd == pytest.approx(0.5 + 0.3)

    [request] = openai_server.requests
    assert request["model"] == "scripted-model"
    assert {tool["function"]["name"] for tool in request["tools"]} == {
        "ProjectSpec",
        "AskClarification",
    }
    assert request["tool_choice"] == "required"
    assert DESCRIPTION in openai_server.prompt_text()
    assert PROVIDER_KEY not in openai_server.raw_bodies()
    assert openai_server.headers[0]["Authorization"] == f"Bearer {PROVIDER_KEY}"


async def test_russian_spec_gets_a_transliterated_slug(
    openai_server: ScriptedOpenAI,
    chat_model: BaseChatModel,
    checkpointer: AsyncPostgresSaver,
    llm_settings: LLMSettings,
) -> None:
    openai_server.replies(
        Reply.tool_call(
            "ProjectSpec",
            expense_spec(name="Семейный бюджет", slug="Семейный бюджет", language="ru"),
        )
    )
    service = llm_service(chat_model, checkpointer, llm_settings)
    outcome = await service.analyse(
        uuid.uuid4(), uuid.uuid4(), "Бот для учёта семейных расходов", ()
    )
    assert isinstance(outcome, SpecOutcome)
    assert outcome.spec.slug == "semeynyy-byudzhet"
    assert "Бот для учёта семейных расходов" in openai_server.prompt_text()


async def test_clarification_round_trip(
    openai_server: ScriptedOpenAI,
    chat_model: BaseChatModel,
    checkpointer: AsyncPostgresSaver,
    llm_settings: LLMSettings,
) -> None:
    project, flow = uuid.uuid4(), uuid.uuid4()
    openai_server.replies(
        Reply.tool_call(
            "AskClarification",
            {"question": "What should the bot do?", "missing": ["purpose"]},
            prompt_tokens=300,
            completion_tokens=20,
        ),
        Reply.tool_call("ProjectSpec", expense_spec(), prompt_tokens=400, completion_tokens=250),
    )
    service = llm_service(chat_model, checkpointer, llm_settings)

    question = await service.analyse(project, flow, "make me a bot", ())
    assert isinstance(question, QuestionOutcome)
    assert question.question == "What should the bot do?"
    assert question.missing == ("purpose",)
    assert not question.offline
    assert [c.usage.prompt_tokens for c in question.calls] == [300]

    # Redelivered: answered from the checkpoint, no second LLM call.
    assert await service.analyse(project, flow, "make me a bot", ()) == question
    assert len(openai_server.requests) == 1

    outcome = await service.analyse(project, flow, "make me a bot", ("track family expenses",))
    assert isinstance(outcome, SpecOutcome)
    assert [c.usage.prompt_tokens for c in outcome.calls] == [400]
    second = openai_server.prompt_text().split("make me a bot", 2)[-1]
    assert "Q1: What should the bot do?" in second
    assert "A1: track family expenses" in second

    # Redelivery of the answered request: same spec, same usage, still no new call.
    assert await service.analyse(project, flow, "make me a bot", ("track family expenses",)) == (
        outcome
    )
    assert len(openai_server.requests) == 2


async def test_after_two_questions_the_model_must_write_the_spec(
    openai_server: ScriptedOpenAI,
    chat_model: BaseChatModel,
    checkpointer: AsyncPostgresSaver,
    llm_settings: LLMSettings,
) -> None:
    project, flow = uuid.uuid4(), uuid.uuid4()
    ask = Reply.tool_call("AskClarification", {"question": "And then?"})
    openai_server.replies(ask, ask, Reply.tool_call("ProjectSpec", expense_spec()))
    service = llm_service(chat_model, checkpointer, llm_settings)

    assert isinstance(await service.analyse(project, flow, "a bot", ()), QuestionOutcome)
    assert isinstance(await service.analyse(project, flow, "a bot", ("hm",)), QuestionOutcome)
    outcome = await service.analyse(project, flow, "a bot", ("hm", "no idea"))

    assert isinstance(outcome, SpecOutcome)
    last = openai_server.requests[-1]
    assert [tool["function"]["name"] for tool in last["tools"]] == ["ProjectSpec"]
    assert last["tool_choice"] == {"type": "function", "function": {"name": "ProjectSpec"}}
    assert "maximum number of questions" in openai_server.prompt_text()


async def test_invalid_output_is_retried_once_with_the_error(
    openai_server: ScriptedOpenAI,
    chat_model: BaseChatModel,
    checkpointer: AsyncPostgresSaver,
    llm_settings: LLMSettings,
) -> None:
    openai_server.replies(
        Reply.tool_call("ProjectSpec", expense_spec(kinds=["desktop_app"])),
        Reply.tool_call("ProjectSpec", expense_spec()),
    )
    service = llm_service(chat_model, checkpointer, llm_settings)
    outcome = await service.analyse(uuid.uuid4(), uuid.uuid4(), DESCRIPTION, ())

    assert isinstance(outcome, SpecOutcome)
    assert len(outcome.calls) == 2
    retry_messages = openai_server.requests[1]["messages"]
    assert retry_messages[-1]["role"] == "tool"
    assert "kinds.0" in retry_messages[-1]["content"]


async def test_invalid_output_twice_is_a_failure(
    openai_server: ScriptedOpenAI,
    chat_model: BaseChatModel,
    checkpointer: AsyncPostgresSaver,
    llm_settings: LLMSettings,
) -> None:
    openai_server.replies(
        Reply.tool_call("ProjectSpec", "{not json"),
        Reply.text("I think you want a bot."),
    )
    service = llm_service(chat_model, checkpointer, llm_settings)
    outcome = await service.analyse(uuid.uuid4(), uuid.uuid4(), DESCRIPTION, ())

    assert isinstance(outcome, FailureOutcome)
    assert "did not produce a valid spec in 2 attempts" in outcome.reason
    assert "no tool was called" in outcome.reason
    assert len(outcome.calls) == 2


async def test_provider_errors_are_retryable_and_resume_from_the_checkpoint(
    openai_server: ScriptedOpenAI,
    chat_model: BaseChatModel,
    checkpointer: AsyncPostgresSaver,
    llm_settings: LLMSettings,
) -> None:
    project, flow = uuid.uuid4(), uuid.uuid4()
    overloaded = Reply.error(503, "overloaded")
    # The client's own retries (2) see three failures before the step gives up.
    openai_server.replies(overloaded, overloaded, overloaded)
    service = llm_service(chat_model, checkpointer, llm_settings)
    with pytest.raises(ProviderUnavailable, match="overloaded"):
        await service.analyse(project, flow, DESCRIPTION, ())

    openai_server.replies(Reply.tool_call("ProjectSpec", expense_spec()))
    outcome = await service.analyse(project, flow, DESCRIPTION, ())
    assert isinstance(outcome, SpecOutcome)
    assert len(openai_server.requests) == 4


async def test_the_prompt_teaches_by_examples_and_the_new_fields_round_trip(
    openai_server: ScriptedOpenAI,
    chat_model: BaseChatModel,
    checkpointer: AsyncPostgresSaver,
    llm_settings: LLMSettings,
) -> None:
    openai_server.replies(
        Reply.tool_call(
            "ProjectSpec",
            expense_spec(
                kinds=["telegram_bot"],  # the schedule needs the worker: the policy adds it
                schedules=[{"name": "monthly_report", "cron": "0 9 1 * *", "action": "report"}],
                integrations=[
                    {
                        "name": "Fixer",
                        "base_url": "https://api.fixer.io/v1",
                        "env_vars": ["fixer_api_key"],  # repaired to FIXER_API_KEY
                    }
                ],
                persistence={"kind": "postgres", "stores": "expenses"},
            ),
        )
    )
    service = llm_service(chat_model, checkpointer, llm_settings)

    outcome = await service.analyse(uuid.uuid4(), uuid.uuid4(), DESCRIPTION, ())

    assert isinstance(outcome, SpecOutcome)
    spec = outcome.spec
    assert spec.kinds == (ServiceKind.TELEGRAM_BOT, ServiceKind.WORKER)
    assert [(s.name, s.cron) for s in spec.schedules] == [("monthly_report", "0 9 1 * *")]
    assert spec.integrations[0].env_vars == ("FIXER_API_KEY",)
    assert spec.persistence is not None
    assert spec.persistence.kind is PersistenceKind.POSTGRES
    assert {"FIXER_API_KEY", "DATABASE_URL", "TELEGRAM_BOT_TOKEN"} <= set(spec.secret_names)
    assert ProjectSpec.model_validate_json(spec.model_dump_json()) == spec

    request = openai_server.requests[0]
    system = request["messages"][0]["content"]
    # Every kind, a combination with a schedule, English and Russian, and vague requests.
    for request_text, _tool, _ in EXAMPLES:
        assert f"Request: {request_text}" in system
    assert {tool for _, tool, _ in EXAMPLES} == {"ProjectSpec", "AskClarification"}
    example_kinds = {
        k for _, tool, args in EXAMPLES if tool == "ProjectSpec" for k in args["kinds"]
    }
    assert example_kinds == {kind.value for kind in ServiceKind}
    assert {"Хочу бота", "Make me something cool for my friends"} <= {r for r, _, _ in EXAMPLES}
    spec_tool = next(t for t in request["tools"] if t["function"]["name"] == "ProjectSpec")
    assert {"schedules", "integrations", "persistence"} <= set(
        spec_tool["function"]["parameters"]["properties"]
    )


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_every_example_in_the_prompt_is_a_valid_answer(index: int) -> None:
    _, tool, arguments = EXAMPLES[index]
    if tool == "ProjectSpec":
        assert enforce(ProjectSpec.model_validate(arguments)) is not None
    else:
        assert AskClarification.model_validate(arguments).question
