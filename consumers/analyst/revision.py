"""Spec revisions: the current spec plus one change request → the revised spec, a question, or
a refusal. Offline the rules of `revision_rules` decide; with an LLM the model is shown the
current spec and the change (never a secret: the spec holds variable names only) and answers
by calling `RevisedSpec` (the full revised spec and a short summary of the diff) or
`AskClarification`.

Unlike a new project's spec, a revision is one short round, so it is not checkpointed: a
redelivered request repeats at most that round's call, and its cost is recorded again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, ValidationError

from contracts.spec import ProjectSpec
from infra.llm import cost_usd, model_name_of, usage_from
from infra.settings import LLMSettings

from . import revision_rules
from .nodes import MAX_ATTEMPTS, ProviderUnavailable
from .prompts import RETRY, AskClarification
from .service import FailureOutcome, LLMCall, QuestionOutcome
from .spec_policy import enforce, repair_arguments

REVISION_PROMPT = """\
You are the analyst of a platform that builds and runs small services. A service is live; \
its owner asks for a change. You get the current spec (JSON) and the change (with answers to \
your earlier questions, if any). Call exactly one tool:

- `RevisedSpec` with the FULL revised spec (keep the slug, and keep everything the change \
does not touch) and a one-sentence summary of what differs from the current spec;
- `AskClarification` only when the change is too unclear to revise the spec; one short \
question in the user's language.

Never ask for secret values; secrets are listed by NAME only, with secret=true and no default."""

#: Questions asked about one change before the model must decide.
MAX_REVISION_QUESTIONS = 2


class RevisedSpec(BaseModel):
    """The revised spec of the live service and what changed."""

    spec: ProjectSpec = Field(description="The full revised spec")
    summary: str = Field(description="One sentence: what differs from the current spec")


@dataclass(frozen=True)
class RevisionOutcome:
    spec: ProjectSpec
    summary: str
    offline: bool
    calls: tuple[LLMCall, ...] = ()


@dataclass(frozen=True)
class RefusalOutcome:
    """The change cannot be made in this mode; `needs_llm` when a model could make it."""

    reason: str
    needs_llm: bool
    offline: bool


Outcome = RevisionOutcome | QuestionOutcome | FailureOutcome | RefusalOutcome


class Reviser:
    """Revises specs with the rules (no model) or with `llm`."""

    def __init__(self, llm: BaseChatModel | None, pricing: LLMSettings | None = None) -> None:
        self._llm = llm
        self._pricing = pricing or LLMSettings()

    @property
    def offline(self) -> bool:
        return self._llm is None

    async def revise(self, spec: ProjectSpec, change: str, answers: Sequence[str]) -> Outcome:
        if self._llm is None:
            return _offline(spec, change, list(answers))
        return await self._with_llm(self._llm, spec, change, list(answers))

    async def _with_llm(
        self, llm: BaseChatModel, spec: ProjectSpec, change: str, answers: list[str]
    ) -> Outcome:
        revised_tool = convert_to_openai_tool(RevisedSpec)
        ask_tool = convert_to_openai_tool(AskClarification)
        decide_now = len(answers) >= MAX_REVISION_QUESTIONS
        tools = [revised_tool] if decide_now else [revised_tool, ask_tool]
        model = llm.bind_tools(tools, tool_choice="any")
        configured = str(getattr(llm, "model_name", None) or getattr(llm, "model", "unknown"))
        messages: list[BaseMessage] = [
            SystemMessage(content=REVISION_PROMPT),
            HumanMessage(content=_request_text(spec, change, answers)),
        ]
        calls: list[LLMCall] = []
        error = ""
        for _attempt in range(MAX_ATTEMPTS):
            try:
                reply = await model.ainvoke(messages)
            except Exception as exc:
                raise ProviderUnavailable(
                    f"LLM provider call failed: {type(exc).__name__}: {exc}"
                ) from exc
            usage = usage_from(reply)
            calls.append(
                LLMCall(model_name_of(reply, configured), usage, cost_usd(usage, self._pricing))
            )
            outcome, error = _interpret(reply, spec, allow_question=not decide_now)
            if isinstance(outcome, RevisionOutcome):
                return RevisionOutcome(outcome.spec, outcome.summary, False, tuple(calls))
            if isinstance(outcome, QuestionOutcome):
                return QuestionOutcome(outcome.question, outcome.missing, False, tuple(calls))
            messages = [*messages, reply, HumanMessage(content=RETRY.format(error=error))]
        return FailureOutcome(
            reason=f"The language model did not produce a valid revision in {MAX_ATTEMPTS} "
            f"attempts; last problem: {error}",
            offline=False,
            calls=tuple(calls),
        )


def _offline(spec: ProjectSpec, change: str, answers: list[str]) -> Outcome:
    decision = revision_rules.revise(spec, change, answers)
    if isinstance(decision, revision_rules.Revision):
        return RevisionOutcome(decision.spec, decision.summary, offline=True)
    if isinstance(decision, revision_rules.NeedsLLM):
        return RefusalOutcome(decision.reason, needs_llm=True, offline=True)
    return QuestionOutcome(decision.text, decision.missing, offline=True)


def _request_text(spec: ProjectSpec, change: str, answers: list[str]) -> str:
    lines = ["Current spec:", json.dumps(spec.model_dump(mode="json"), ensure_ascii=False)]
    lines += ["", "Change requested:", change.strip()]
    if answers:
        lines += ["", "Answers to your questions about this change:"]
        lines += [f"A{index + 1}: {answer.strip()}" for index, answer in enumerate(answers)]
    return "\n".join(lines)


def _interpret(
    reply: BaseMessage, current: ProjectSpec, allow_question: bool
) -> tuple[RevisionOutcome | QuestionOutcome | None, str]:
    if not isinstance(reply, AIMessage) or not reply.tool_calls:
        return None, "no tool was called; call RevisedSpec or AskClarification"
    call = reply.tool_calls[0]
    try:
        if call["name"] == AskClarification.__name__ and allow_question:
            ask = AskClarification.model_validate(call["args"])
            return QuestionOutcome(ask.question, tuple(ask.missing), offline=False), ""
        if call["name"] == RevisedSpec.__name__:
            args = dict(call["args"])
            spec_args = args.get("spec")
            if isinstance(spec_args, dict):
                args["spec"] = repair_arguments(spec_args)
            revised = RevisedSpec.model_validate(args)
            spec = enforce(revised.spec.model_copy(update={"slug": current.slug}))
            return RevisionOutcome(spec, revised.summary.strip()[:1000], offline=False), ""
    except ValidationError as exc:
        return None, "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in exc.errors()[:6]
        )
    return None, f"{call['name']} cannot be called now; call RevisedSpec"
