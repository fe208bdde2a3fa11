"""The coding loop as a LangGraph graph: baseline tests → (model ⇄ tools) → tests → repeat.

The model sees the spec and the failing tests, edits files with its tools until it stops
calling them, then the tests run. The loop ends when the work is done in the guard's sense
(`guard.py`): tests green, at least as many passing as existed before, the acceptance tests
among them, the protected files untouched and something changed; then, when an app check
is given, the app must start the way the deployer starts it and answer its health endpoint.
Anything else goes back to the model with the reason, until `max_iterations` test runs have
been spent. The graph is built by a factory so tests inject a model talking to a scripted
server and the container entry point builds the very same loop.

Only the last `keep_tool_results` tool answers are sent to the model in full; older ones
become a one-line stub. File contents and test output are most of a run's prompt, and the
model can read a file again, so a long run's prompt stays bounded instead of growing with
every call (each call re-sends the whole conversation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode

from consumers.engineer.coder.guard import acceptance_note, tests_problem
from consumers.engineer.coder.prompts import SYSTEM_PROMPT, retry_message, task_message
from consumers.engineer.coder.state import CoderState
from consumers.engineer.test_runner import TestReport
from contracts.spec import ProjectSpec

#: Tool calls the model may make between two test runs.
MAX_TOOL_ROUNDS = 40
#: Tool answers sent to the model in full; older ones are replaced by a stub.
KEEP_TOOL_RESULTS = 8

RunTests = Callable[[], Awaitable[TestReport]]
#: Why the workspace cannot be shipped as it is ("" when it can): `WorkspaceGuard.problem`.
WorkspaceProblem = Callable[[], str]
#: Why the app does not start and answer its health endpoint ("" when it does).
AppProblem = Callable[[], Awaitable[str]]


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
    workspace_problem: WorkspaceProblem = lambda: "",
    keep_tool_results: int = KEEP_TOOL_RESULTS,
    repo_map: str = "",
    app_problem: AppProblem | None = None,
) -> CompiledStateGraph[CoderState, Any, CoderState, CoderState]:
    """Compile the loop for one task; `tools` act on that task's workspace, `repo_map` lists
    its files for the first message, and `app_problem` (when given) is asked once the tests
    and the workspace pass, so it costs an app start only for work that is otherwise done."""
    model = llm.bind_tools(list(tools))

    async def baseline(state: CoderState) -> dict[str, Any]:
        report = await run_tests()
        return {
            "messages": [HumanMessage(
                task_message(spec, report, change, repo_map, acceptance_note(report))
            )],
            "iteration": 0,
            "tool_rounds": 0,
            "report": report,
            "baseline": report,
            "problem": "no test run after a change yet",
        }

    async def agent(state: CoderState) -> dict[str, Any]:
        history = trim_tool_results(state["messages"], keep_tool_results)
        response = await model.ainvoke([SystemMessage(SYSTEM_PROMPT), *history])
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
        problem = tests_problem(report, state["baseline"]) or workspace_problem()
        if not problem and app_problem is not None:
            problem = await app_problem()
        update: dict[str, Any] = {
            "report": report, "iteration": iteration, "tool_rounds": 0, "problem": problem,
        }
        if problem and iteration < max_iterations:
            update["messages"] = [HumanMessage(retry_message(iteration, problem))]
        return update

    def after_test(state: CoderState) -> Literal["agent", "end"]:
        if not state["problem"] or state["iteration"] >= max_iterations:
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


def trim_tool_results(messages: Sequence[AnyMessage], keep: int) -> list[AnyMessage]:
    """`messages` with all but the last `keep` tool answers replaced by a one-line stub.

    The stub keeps its tool call id, so the conversation stays well-formed for the provider.
    """
    tool_indices = [i for i, message in enumerate(messages) if isinstance(message, ToolMessage)]
    old = set(tool_indices[: max(len(tool_indices) - keep, 0)])
    return [
        message.model_copy(update={"content": (
            f"[earlier {message.name or 'tool'} output trimmed to keep the conversation short; "
            "call the tool again if you need it]"
        )})
        if i in old else message
        for i, message in enumerate(messages)
    ]
