"""The coding loop's state: the conversation and where the tests stand."""

from __future__ import annotations

from typing import Annotated, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from consumers.engineer.test_runner import TestReport


class CoderState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    #: Test runs after the model's edits so far (the baseline run does not count).
    iteration: int
    #: Tool rounds in the current iteration; bounded so one iteration cannot loop forever.
    tool_rounds: int
    report: TestReport
    #: The tests before any change: the bar a finished run must reach (`guard.tests_problem`).
    baseline: TestReport
    #: Why the last test run does not count as done; "" when it does.
    problem: str
