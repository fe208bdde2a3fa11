"""The analyst graph's nodes: analyse (rules or LLM), and ask (pause for the user's answer).

A node's return value is checkpointed when the node finishes, so an LLM call whose answer was
recorded is never made again: a redelivered SpecRequested resumes after it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END
from langgraph.types import interrupt
from pydantic import ValidationError

from contracts.spec import ProjectSpec
from infra.llm import model_name_of, usage_from

from . import rules
from .prompts import RETRY, AskClarification, build_messages
from .recall import with_earlier_projects
from .recall_rules import build_on_earlier
from .spec_policy import enforce, repair_arguments
from .state import AnalystState, CallRecord

#: LLM answers per round: the first, and one retry told what was wrong with it.
MAX_ATTEMPTS = 2

Update = dict[str, Any]


class AsyncNode(Protocol):
    """A graph node; LangGraph passes the state by the parameter name `state`."""

    def __call__(self, state: AnalystState) -> Awaitable[Update]: ...


class ProviderUnavailable(Exception):
    """The LLM provider did not answer (network, rate limit, 5xx, refused key): retry later."""


def offline_analyse(state: AnalystState) -> Update:
    """The deterministic analyst: an earlier project the request refers to is the base;
    otherwise the rules decide between a spec and a question."""
    answers = state.get("answers", [])
    built_on = build_on_earlier(state["description"], answers, state.get("recalled", []))
    if built_on is not None:
        return {"spec": built_on.model_dump(mode="json"), "pending": None}
    decision = rules.decide(state["description"], answers)
    if isinstance(decision, rules.Question):
        return {"pending": {"question": decision.text, "missing": list(decision.missing)}}
    return {"spec": decision.model_dump(mode="json"), "pending": None}


def make_llm_analyse(llm: BaseChatModel) -> AsyncNode:
    """The LLM analyst: the model calls `ProjectSpec` or `AskClarification` (tool calling)."""
    spec_tool = convert_to_openai_tool(ProjectSpec)
    ask_tool = convert_to_openai_tool(AskClarification)
    spec_name = spec_tool["function"]["name"]
    spec_or_question = llm.bind_tools([spec_tool, ask_tool], tool_choice="any")
    spec_only = llm.bind_tools([spec_tool], tool_choice=spec_name)
    configured_model = str(getattr(llm, "model_name", None) or getattr(llm, "model", "unknown"))

    async def analyse(state: AnalystState) -> Update:
        answers = state.get("answers", [])
        decide_now = len(answers) >= rules.MAX_QUESTIONS
        messages = with_earlier_projects(
            build_messages(state["description"], state.get("questions", []), answers, decide_now),
            state.get("recalled", []),
        )
        model = spec_only if decide_now else spec_or_question
        calls: list[CallRecord] = []
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
                {
                    "model": model_name_of(reply, configured_model),
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "round": len(answers),
                }
            )
            update, error = _interpret(reply, spec_name, allow_question=not decide_now)
            if update is not None:
                return {**update, "calls": calls}
            messages = [*messages, reply, *_feedback(reply, error)]
        return {
            "failure": (
                f"The language model did not produce a valid spec in {MAX_ATTEMPTS} "
                f"attempts; last problem: {error}"
            ),
            "pending": None,
            "calls": calls,
        }

    return analyse


def _validation_summary(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'arguments'}: {item['msg']}"
        for item in exc.errors()[:6]
    ]
    return "; ".join(problems)


def _interpret(
    reply: BaseMessage, spec_name: str, allow_question: bool
) -> tuple[Update | None, str]:
    """The state update an answer means, or why it is unusable."""
    if not isinstance(reply, AIMessage):
        return None, f"expected an assistant message, got {type(reply).__name__}"
    if reply.invalid_tool_calls:
        broken = reply.invalid_tool_calls[0]
        return None, f"the arguments of {broken.get('name')} are not valid JSON"
    if not reply.tool_calls:
        return None, f"no tool was called; call {spec_name} or {AskClarification.__name__}"
    call = reply.tool_calls[0]
    if call["name"] == AskClarification.__name__ and allow_question:
        try:
            ask = AskClarification.model_validate(call["args"])
        except ValidationError as exc:
            return None, _validation_summary(exc)
        return {"pending": {"question": ask.question, "missing": ask.missing}}, ""
    if call["name"] == spec_name:
        try:
            spec = enforce(ProjectSpec.model_validate(repair_arguments(call["args"])))
        except ValidationError as exc:
            return None, _validation_summary(exc)
        return {"spec": spec.model_dump(mode="json"), "pending": None}, ""
    return None, f"{call['name']} cannot be called now; call {spec_name}"


def _feedback(reply: BaseMessage, error: str) -> list[BaseMessage]:
    """Tell the model what was wrong, answering each of its tool calls as the protocol requires."""
    text = RETRY.format(error=error)
    if isinstance(reply, AIMessage):
        ids = [c["id"] for c in reply.tool_calls] + [c["id"] for c in reply.invalid_tool_calls]
        if ids and all(ids):
            return [ToolMessage(content=text, tool_call_id=str(i)) for i in ids]
    return [HumanMessage(content=text)]


def ask(state: AnalystState) -> Update:
    """Pause the flow with the pending question; resumes with the user's answer."""
    pending = state.get("pending")
    if pending is None:
        raise RuntimeError("the ask node ran without a pending question")
    answer = interrupt(pending)
    return {
        "answers": [*state.get("answers", []), str(answer)],
        "questions": [*state.get("questions", []), pending["question"]],
        "pending": None,
    }


def after_analyse(state: AnalystState) -> str:
    return "ask" if state.get("pending") else END
