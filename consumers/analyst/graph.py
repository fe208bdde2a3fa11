"""The analyst graph: analyse -> (ask -> analyse)* -> end, checkpointed per project flow.

    START -> analyse --pending question--> ask --(interrupt: wait for the answer)--> analyse
                   \\--spec or failure--> END

The thread id is the project's flow id (the events' correlation id): the next SpecRequested
of the same flow resumes the paused `ask` with the user's answer, and a redelivered one finds
its work already checkpointed.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from .nodes import after_analyse, ask, make_llm_analyse, offline_analyse
from .state import AnalystState

AnalystGraph = CompiledStateGraph[AnalystState, None, AnalystState, AnalystState]


def build_graph(llm: BaseChatModel | None, checkpointer: BaseCheckpointSaver[Any]) -> AnalystGraph:
    """The analyst for `llm`, or the deterministic offline analyst when `llm` is None."""
    builder: StateGraph[AnalystState, None, AnalystState, AnalystState] = StateGraph(AnalystState)
    if llm is None:
        builder.add_node("analyse", offline_analyse)
    else:
        builder.add_node("analyse", make_llm_analyse(llm))
    builder.add_node("ask", ask)
    builder.add_edge(START, "analyse")
    builder.add_conditional_edges("analyse", after_analyse, ["ask", END])
    builder.add_edge("ask", "analyse")
    return builder.compile(checkpointer=checkpointer, name="analyst")
