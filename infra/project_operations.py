"""When a person may redeploy, restart, roll back or retry a project: one rule set for all.

The coordinator applies these rules to every intent (it alone decides), and the doors apply the
same ones first, so a person hears a plain refusal at once instead of a notice later. The rules
look only at what the project row records.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from infra.db.enums import ProjectState


class Operation(StrEnum):
    REDEPLOY = "redeploy"
    RESTART = "restart"
    ROLLBACK = "rollback"
    RETRY = "retry"


#: How long a redeploy, restart or rollback blocks another one on the same project. Longer than
#: the deployer's longest run (its ack wait times its deliveries), so two never overlap, and
#: bounded, so a request lost to the dead-letter queue does not block the project for good.
OPERATION_BUDGET = timedelta(minutes=20)

_DONE = {
    Operation.REDEPLOY: "redeployed",
    Operation.RESTART: "restarted",
    Operation.ROLLBACK: "rolled back",
    Operation.RETRY: "retried",
}


class ProjectFacts(Protocol):
    """The columns the rules read (a `Project` row and the doors' read model have them all)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def state(self) -> str: ...
    @property
    def code_commit(self) -> str | None: ...
    @property
    def live_commit(self) -> str | None: ...
    @property
    def previous_commit(self) -> str | None: ...
    @property
    def operation(self) -> str | None: ...
    @property
    def operation_started_at(self) -> datetime | None: ...


def serving_commit(project: ProjectFacts) -> str | None:
    """The commit a live project serves (rows from before live commits were recorded: its code)."""
    if project.state != ProjectState.ACTIVE:
        return None
    return project.live_commit or project.code_commit


def operation_under_way(project: ProjectFacts, now: datetime | None = None) -> str | None:
    """The redeploy, restart or rollback still running on the project, if any."""
    if project.operation is None or project.operation_started_at is None:
        return None
    if (now or datetime.now(UTC)) - project.operation_started_at > OPERATION_BUDGET:
        return None
    return project.operation


def refusal(project: ProjectFacts, operation: Operation, now: datetime | None = None) -> str | None:
    """Why `operation` cannot be applied to `project` now, or None when it can."""
    done = _DONE[operation]
    name = f"project {project.id}"
    if project.state == ProjectState.ARCHIVED:
        return f"{name} is archived and cannot be {done}; start a new project instead"
    if operation is Operation.RETRY:
        if project.state != ProjectState.FAILED:
            live = project.state == ProjectState.ACTIVE
            hint = " (use redeploy to deploy it again)" if live else ""
            return f"{name} is {project.state}, not failed: only a failed project is retried{hint}"
        return None
    if project.state == ProjectState.FAILED:
        return f"{name} failed before it went live; retry it instead (it resumes where it failed)"
    if project.state != ProjectState.ACTIVE:
        return (
            f"{name} is {project.state}: only a live project can be {done}; wait until it is live"
        )
    running = operation_under_way(project, now)
    if running is not None:
        assert project.operation_started_at is not None
        since = project.operation_started_at.strftime("%H:%M UTC")
        return f"a {running} of {name} is under way since {since}; wait for its outcome"
    if operation is Operation.ROLLBACK and project.previous_commit is None:
        return (
            f"{name} has no previous release to roll back to: only one release of it has been live"
        )
    return None
