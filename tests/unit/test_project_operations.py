"""The rules for redeploy, restart, rollback and retry: what each door and the coordinator say."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from infra.db.models import ProjectState
from infra.project_operations import OPERATION_BUDGET, Operation, refusal, serving_commit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PROJECT_ID = uuid.UUID(int=1)


@dataclass(frozen=True)
class Facts:
    id: uuid.UUID = PROJECT_ID
    state: str = ProjectState.ACTIVE
    code_commit: str | None = "b" * 40
    live_commit: str | None = "b" * 40
    previous_commit: str | None = "a" * 40
    operation: str | None = None
    operation_started_at: datetime | None = None


LIVE = Facts()


@pytest.mark.parametrize("operation", [Operation.REDEPLOY, Operation.RESTART, Operation.ROLLBACK])
def test_a_live_project_can_be_redeployed_restarted_and_rolled_back(operation: Operation) -> None:
    assert refusal(LIVE, operation, NOW) is None


@pytest.mark.parametrize(
    ("facts", "operation", "reason"),
    [
        (replace(LIVE, previous_commit=None), Operation.ROLLBACK, "no previous release"),
        (LIVE, Operation.RETRY, "is active, not failed: only a failed project is retried (use"),
        (replace(LIVE, state=ProjectState.BUILDING), Operation.REDEPLOY, "wait until it is live"),
        (replace(LIVE, state=ProjectState.FAILED), Operation.RESTART, "retry it instead"),
        (replace(LIVE, state=ProjectState.ARCHIVED), Operation.RETRY, "is archived"),
        (
            replace(LIVE, operation="redeploy", operation_started_at=NOW - timedelta(minutes=1)),
            Operation.ROLLBACK,
            "a redeploy of project 00000000-0000-0000-0000-000000000001 is under way since",
        ),
    ],
)
def test_what_is_refused_and_why(facts: Facts, operation: Operation, reason: str) -> None:
    said = refusal(facts, operation, NOW)
    assert said is not None and reason in said, said


def test_an_operation_lost_for_longer_than_its_budget_no_longer_blocks() -> None:
    stale = replace(LIVE, operation="restart", operation_started_at=NOW - OPERATION_BUDGET * 2)
    assert refusal(stale, Operation.RESTART, NOW) is None


def test_a_failed_project_is_retried_and_a_live_one_serves_its_live_commit() -> None:
    assert refusal(replace(LIVE, state=ProjectState.FAILED), Operation.RETRY, NOW) is None
    assert serving_commit(LIVE) == "b" * 40
    assert serving_commit(replace(LIVE, live_commit=None)) == LIVE.code_commit
    assert serving_commit(replace(LIVE, state=ProjectState.FAILED)) is None
