"""Spec revisions for change requests: the offline rules for each change they recognise and
their refusal of what needs an LLM, and the LLM reviser against a scripted OpenAI-compatible
server (prompt content, tool choice, the slug kept, a question, a repaired answer)."""

from __future__ import annotations

import pytest
from langchain_core.language_models import BaseChatModel

from consumers.analyst.revision import (
    RefusalOutcome,
    RevisedSpec,
    Reviser,
    RevisionOutcome,
)
from consumers.analyst.revision_rules import NeedsLLM, Revision, revise
from consumers.analyst.rules import Question, decide
from consumers.analyst.service import QuestionOutcome
from contracts.spec import ProjectSpec, ServiceKind
from infra.settings import LLMSettings
from tests.fakes.openai_server import Reply, ScriptedOpenAI

from .conftest import PROVIDER_KEY


def spec_for(description: str) -> ProjectSpec:
    spec = decide(description, [])
    assert isinstance(spec, ProjectSpec)
    return spec


API = spec_for("an HTTP API that tracks my expenses")
BOT = spec_for("a telegram bot that tracks my tasks")


def revised(spec: ProjectSpec, change: str, answers: list[str] | None = None) -> Revision:
    outcome = revise(spec, change, answers or [])
    assert isinstance(outcome, Revision), outcome
    assert outcome.spec.slug == spec.slug and outcome.spec.name == spec.name
    return outcome


def test_a_known_entity_adds_its_crud_endpoints_and_keeps_everything_else() -> None:
    outcome = revised(API, "also keep my contacts")
    assert [e.name for e in outcome.spec.entities] == ["Expense", "Contact"]
    contact = outcome.spec.entities[1]
    assert {f.name for f in contact.fields} == {"name", "phone", "email"}
    paths = {(e.method, e.path) for e in outcome.spec.endpoints}
    assert {("GET", "/contacts"), ("POST", "/contacts"), ("GET", "/expenses")} <= paths
    assert outcome.spec.config == API.config
    assert outcome.summary == "[offline mode] added entity Contact (GET/POST /contacts)."


def test_a_named_entity_gets_the_fields_the_change_lists() -> None:
    outcome = revised(API, "add an entity called Invoice with fields number:int, amount:float")
    invoice = outcome.spec.entities[-1]
    assert invoice.name == "Invoice"
    assert [(f.name, f.type) for f in invoice.fields] == [("number", "int"), ("amount", "float")]
    assert ("POST", "/invoices") in {(e.method, e.path) for e in outcome.spec.endpoints}


def test_a_collection_endpoint_is_served_by_a_new_entity() -> None:
    outcome = revised(API, "add an endpoint GET /widgets")
    assert outcome.spec.entities[-1].name == "Widget"
    assert ("GET", "/widgets/{id}") in {(e.method, e.path) for e in outcome.spec.endpoints}


def test_a_bot_command_is_added_to_a_bot() -> None:
    outcome = revised(BOT, "add a command /stats")
    assert [c.command for c in outcome.spec.commands][-1] == "stats"
    assert outcome.spec.entities == BOT.entities
    assert outcome.summary == "[offline mode] added bot command /stats."


def test_a_variable_keeps_its_default_and_a_secret_gets_none() -> None:
    plain = revised(API, "add a variable REPORT_CURRENCY default EUR")
    currency = next(v for v in plain.spec.config if v.name == "REPORT_CURRENCY")
    assert (currency.secret, currency.default) == (False, "EUR")
    secret = revised(API, "add a secret SENTRY_TOKEN, default abc")
    token = next(v for v in secret.spec.config if v.name == "SENTRY_TOKEN")
    assert (token.secret, token.default) == (True, None)
    assert "SENTRY_TOKEN" in secret.spec.secret_names


@pytest.mark.parametrize(
    "change",
    [
        "add an endpoint that returns totals per month",
        "send me an e-mail when an expense is over 100",
        "make it prettier",
    ],
)
def test_behaviour_needs_an_llm_and_says_what_to_configure(change: str) -> None:
    outcome = revise(API, change, [])
    assert isinstance(outcome, NeedsLLM)
    assert "ORCH_LLM__PROVIDER" in outcome.reason
    assert "orchestrator secrets set-platform llm api_key" in outcome.reason


def test_an_unnamed_addition_gets_one_question_then_a_revision_or_a_refusal() -> None:
    question = revise(BOT, "add a command", [])
    assert isinstance(question, Question) and question.missing == ("command",)
    assert question.text.startswith("[offline mode] ")
    assert revised(BOT, "add a command", ["/export_all"]).spec.commands[-1].command == "export_all"
    assert isinstance(revise(BOT, "add a command", ["no idea"]), NeedsLLM)


def test_a_command_for_a_project_that_is_not_a_bot_needs_an_llm() -> None:
    outcome = revise(API, "add a command", ["whatever"])
    assert isinstance(outcome, NeedsLLM)
    assert "not a Telegram bot" in outcome.reason


async def test_offline_reviser_reports_needs_llm_as_a_refusal() -> None:
    outcome = await Reviser(None).revise(API, "return totals per month", ())
    assert isinstance(outcome, RefusalOutcome) and outcome.needs_llm and outcome.offline


async def test_llm_reviser_sends_spec_and_change_and_keeps_the_slug(
    openai_server: ScriptedOpenAI, chat_model: BaseChatModel, llm_settings: LLMSettings
) -> None:
    """The model sees the current spec and the change; its revised spec keeps the slug (it
    names the repository and the deploy), and its usage is priced."""
    with_totals = API.model_copy(
        update={
            "slug": "renamed-by-the-model",
            "endpoints": (*API.endpoints, *API.endpoints[:1]),
        }
    ).model_dump(mode="json")
    with_totals["endpoints"].append(
        {"method": "GET", "path": "/totals", "summary": "Totals per month"}
    )
    openai_server.replies(
        Reply.tool_call(
            RevisedSpec.__name__,
            {"spec": with_totals, "summary": "Adds GET /totals with totals per month."},
            prompt_tokens=1000,
            completion_tokens=100,
        )
    )
    outcome = await Reviser(chat_model, llm_settings).revise(
        API, "add an endpoint that returns totals per month", ()
    )
    assert isinstance(outcome, RevisionOutcome) and not outcome.offline
    assert outcome.spec.slug == API.slug
    assert ("GET", "/totals") in {(e.method, e.path) for e in outcome.spec.endpoints}
    assert outcome.summary == "Adds GET /totals with totals per month."
    [call] = outcome.calls
    assert call.cost_usd == pytest.approx(0.5 + 0.15)
    prompt = openai_server.prompt_text()
    assert "add an endpoint that returns totals per month" in prompt
    assert '"slug": "expense-api"' in prompt
    assert PROVIDER_KEY not in openai_server.raw_bodies()
    [request] = openai_server.requests
    assert {t["function"]["name"] for t in request["tools"]} == {
        "RevisedSpec",
        "AskClarification",
    }


async def test_llm_reviser_asks_when_the_change_is_unclear(
    openai_server: ScriptedOpenAI, chat_model: BaseChatModel
) -> None:
    openai_server.replies(
        Reply.tool_call("AskClarification", {"question": "Totals of what, per month?"})
    )
    outcome = await Reviser(chat_model).revise(BOT, "add totals", ["by category"])
    assert isinstance(outcome, QuestionOutcome)
    assert outcome.question == "Totals of what, per month?"
    assert "A1: by category" in openai_server.prompt_text()
    assert ServiceKind.TELEGRAM_BOT in BOT.kinds
