"""The analyst step: one SpecRequested in, a spec, a question or a failure out.

The graph is checkpointed per flow (thread id = the flow's correlation id). This service
decides how a request meets the checkpoint: a new flow starts the graph; a request carrying
an answer the graph has not seen resumes the paused question with it; a request the graph
has already handled (a redelivery) gets the checkpointed outcome back without calling the
LLM again. Each outcome carries the LLM calls of its round, for the `llm_usage` ledger.

A new flow first recalls the owner's earlier projects from memory (`recall.py`); what it
found goes into the flow's first checkpoint with the description, so it is searched once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, StateSnapshot

from contracts.spec import ProjectSpec
from infra.llm import TokenUsage, cost_usd
from infra.memory_search import MemorySearch
from infra.settings import LLMSettings

from .graph import AnalystGraph
from .nodes import ProviderUnavailable
from .recall import Recall
from .state import AnalystState, PendingQuestion

__all__ = [
    "AnalystService",
    "FailureOutcome",
    "LLMCall",
    "Outcome",
    "ProviderUnavailable",
    "QuestionOutcome",
    "SpecOutcome",
]


@dataclass(frozen=True)
class LLMCall:
    """One provider call made for this outcome, priced at the configured rates."""

    model: str
    usage: TokenUsage
    cost_usd: float


@dataclass(frozen=True)
class SpecOutcome:
    spec: ProjectSpec
    offline: bool
    calls: tuple[LLMCall, ...] = ()


@dataclass(frozen=True)
class QuestionOutcome:
    question: str
    missing: tuple[str, ...]
    offline: bool
    calls: tuple[LLMCall, ...] = ()


@dataclass(frozen=True)
class FailureOutcome:
    """The analyst gave up (the model's output stayed invalid); `reason` is for the user."""

    reason: str
    offline: bool
    calls: tuple[LLMCall, ...] = ()


Outcome = SpecOutcome | QuestionOutcome | FailureOutcome


class AnalystService:
    """Runs the analyst graph for one request of a project flow."""

    def __init__(
        self,
        graph: AnalystGraph,
        *,
        offline: bool,
        pricing: LLMSettings | None = None,
        memory: MemorySearch | None = None,
    ) -> None:
        self._graph = graph
        #: The user's earlier specs and answers (through the indexer); None runs without memory.
        self._memory = memory
        self._offline = offline
        self._recall = Recall(memory)
        # Without prices (local models) tokens are still counted; they cost nothing.
        self._pricing = pricing or LLMSettings()

    @property
    def offline(self) -> bool:
        """True when no LLM is configured: the rules cost nothing and need no budget."""
        return self._offline

    async def analyse(
        self,
        project_id: uuid.UUID,
        flow_id: uuid.UUID,
        description: str,
        answers: Sequence[str],
        *,
        owner: str | None = None,
    ) -> Outcome:
        """The outcome for the description and all answers given so far (in order).

        `owner` is the project's user: their earlier projects are recalled from memory when
        the flow starts (none when it is None).

        Raises ProviderUnavailable when the LLM provider failed: nothing was checkpointed for
        the failed call, so a retry repeats only that call.
        """
        config: RunnableConfig = {
            "configurable": {"thread_id": str(flow_id)},
            "metadata": {"project_id": str(project_id)},
        }
        snapshot = await self._graph.aget_state(config)
        if not snapshot.values:
            first: AnalystState = {
                "description": description,
                "recalled": await self._recall.earlier_projects(owner, project_id, description),
                "answers": list(answers),
                "questions": [],
                "pending": None,
                "spec": None,
                "failure": None,
                "calls": [],
            }
            await self._graph.ainvoke(first, config)
        elif snapshot.next and not _pending(snapshot):
            # A previous run stopped mid-way (provider error): continue from its checkpoint.
            await self._graph.ainvoke(None, config)
        snapshot = await self._graph.aget_state(config)
        while _pending(snapshot) is not None:
            known = len(snapshot.values.get("answers", []))
            if known >= len(answers):
                break
            await self._graph.ainvoke(Command(resume=answers[known]), config)
            snapshot = await self._graph.aget_state(config)
        return self._outcome(snapshot)

    def _outcome(self, snapshot: StateSnapshot) -> Outcome:
        values: dict[str, Any] = snapshot.values
        current_round = len(values.get("answers", []))
        calls = tuple(
            self._priced(call) for call in values.get("calls", []) if call["round"] == current_round
        )
        pending = _pending(snapshot)
        if pending is not None:
            return QuestionOutcome(
                question=pending["question"],
                missing=tuple(pending["missing"]),
                offline=self._offline,
                calls=calls,
            )
        if values.get("spec"):
            return SpecOutcome(
                spec=ProjectSpec.model_validate(values["spec"]),
                offline=self._offline,
                calls=calls,
            )
        reason = values.get("failure") or "the analyst stopped without a spec or a question"
        return FailureOutcome(reason=str(reason), offline=self._offline, calls=calls)

    def _priced(self, call: dict[str, Any]) -> LLMCall:
        usage = TokenUsage(int(call["prompt_tokens"]), int(call["completion_tokens"]))
        return LLMCall(
            model=str(call["model"]), usage=usage, cost_usd=cost_usd(usage, self._pricing)
        )


def _pending(snapshot: StateSnapshot) -> PendingQuestion | None:
    """The question the graph is paused on, if it is paused."""
    for pending_interrupt in snapshot.interrupts:
        value = pending_interrupt.value
        if isinstance(value, dict) and "question" in value:
            return PendingQuestion(
                question=str(value["question"]), missing=list(value.get("missing", []))
            )
    return None
