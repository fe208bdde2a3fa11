"""The coding loop as a LangGraph graph: baseline tests → (model ⇄ tools) → tests → repeat.

The model sees the spec and the failing tests, edits files with its tools until it stops
calling them, then the tests run. Green tests end the loop; red ones go back to the model with
the failures, until `max_iterations` test runs have been spent. The graph is built by a
factory so tests inject a model talking to a scripted server and the container entry point
builds the very same loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode

from consumers.engineer.coder.prompts import SYSTEM_PROMPT, retry_message, task_message
from consumers.engineer.coder.state import CoderState
from consumers.engineer.test_runner import TestReport
from contracts.spec import ProjectSpec

#: Tool calls the model may make between two test runs.
MAX_TOOL_ROUNDS = 40

RunTests = Callable[[], Awaitable[TestReport]]


def recursion_limit(max_iterations: int, max_tool_rounds: int = MAX_TOOL_ROUNDS) -> int:
    """A LangGraph step budget that the loop's own bounds always stay under."""
    return max_iterations * (2 * max_tool_rounds + 3) + 10


def build_coder_graph(
    llm: BaseChatModel,
    tools: Sequence[BaseTool],
    *,
    spec: ProjectSpec,
    run_tests: RunTests,
    max_iterations: int,
    max_tool_rounds: int = MAX_TOOL_ROUNDS,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    change: str = "",
) -> CompiledStateGraph[CoderState, Any, CoderState, CoderState]:
    """Compile the loop for one task; `tools` act on that task's workspace."""
    model = llm.bind_tools(list(tools))

    async def baseline(state: CoderState) -> dict[str, Any]:
        report = await run_tests()
        return {
            "messages": [HumanMessage(task_message(spec, report, change))],
            "iteration": 0,
            "tool_rounds": 0,
            "report": report,
        }

    async def agent(state: CoderState) -> dict[str, Any]:
        response = await model.ainvoke([SystemMessage(SYSTEM_PROMPT), *state["messages"]])
        return {"messages": [response]}

    def after_agent(state: CoderState) -> Literal["tools", "test"]:
        last = state["messages"][-1]
        wants_tools = isinstance(last, AIMessage) and bool(last.tool_calls)
        return "tools" if wants_tools and state["tool_rounds"] < max_tool_rounds else "test"

    def count_round(state: CoderState) -> dict[str, Any]:
        return {"tool_rounds": state["tool_rounds"] + 1}

    async def test(state: CoderState) -> dict[str, Any]:
        report = await run_tests()
        iteration = state["iteration"] + 1
        update: dict[str, Any] = {"report": report, "iteration": iteration, "tool_rounds": 0}
        if not report.ok and iteration < max_iterations:
            update["messages"] = [HumanMessage(retry_message(iteration, report))]
        return update

    def after_test(state: CoderState) -> Literal["agent", "end"]:
        if state["report"].ok or state["iteration"] >= max_iterations:
            return "end"
        return "agent"

    graph = StateGraph(CoderState)
    graph.add_node("baseline", baseline)
    graph.add_node("agent", agent)
    graph.add_node("count_round", count_round)
    graph.add_node("tools", ToolNode(list(tools)))
    graph.add_node("test", test)
    graph.add_edge(START, "baseline")
    graph.add_edge("baseline", "agent")
    graph.add_conditional_edges("agent", after_agent, {"tools": "count_round", "test": "test"})
    graph.add_edge("count_round", "tools")
    graph.add_edge("tools", "agent")
    graph.add_conditional_edges("test", after_test, {"agent": "agent", "end": END})
    return graph.compile(checkpointer=checkpointer)
