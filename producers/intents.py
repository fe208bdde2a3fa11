"""Building intents the same way in every producer (bot, API, CLI, console chat).

Every intent names its acting user: the coordinator applies an answer, an archive request or a
secret notice only for the project's owner or an admin, and refuses one that names nobody.
"""

from __future__ import annotations

import uuid
from typing import Literal

from contracts.events import (
    ChangeRequested,
    ClarificationAnswered,
    ProjectArchiveRequested,
    ProjectRedeployRequested,
    ProjectRequested,
    ProjectRestartRequested,
    ProjectRetryRequested,
    ProjectRollbackRequested,
    SecretStored,
)
from infra.project_operations import Operation

Source = Literal["telegram", "api", "cli", "console"]
OperationIntent = (
    ProjectRedeployRequested
    | ProjectRestartRequested
    | ProjectRollbackRequested
    | ProjectRetryRequested
)


def project_request(
    description: str, *, user_id: str, source: Source, chat_id: int | None = None
) -> ProjectRequested:
    """A new project: its id and flow id are chosen here, so the producer can answer at once."""
    flow_id = uuid.uuid4()
    return ProjectRequested(
        correlation_id=flow_id,
        actor=user_id,
        project_id=uuid.uuid4(),
        description=description.strip(),
        user_id=user_id,
        chat_id=chat_id,
        source=source,
    )


def clarification_answer(
    project_id: uuid.UUID, flow_id: uuid.UUID, answer: str, *, user_id: str, source: Source
) -> ClarificationAnswered:
    return ClarificationAnswered(
        correlation_id=flow_id,
        actor=user_id,
        project_id=project_id,
        answer=answer.strip(),
        user_id=user_id,
    )


def archive_request(
    project_id: uuid.UUID, flow_id: uuid.UUID, reason: str, *, user_id: str
) -> ProjectArchiveRequested:
    """Retire a project; `user_id` must own it or be an admin, or the coordinator refuses."""
    return ProjectArchiveRequested(
        correlation_id=flow_id,
        actor=user_id,
        project_id=project_id,
        reason=reason.strip(),
        user_id=user_id,
    )


def secret_stored(
    project_id: uuid.UUID, flow_id: uuid.UUID, name: str, vault_path: str, *, user_id: str
) -> SecretStored:
    """Announce a secret written to Vault: its name and path only, never its value.

    A fresh event id each time: storing the same name again is a new fact for the timeline.
    """
    return SecretStored(
        correlation_id=flow_id,
        actor=user_id,
        project_id=project_id,
        name=name,
        vault_path=vault_path,
        user_id=user_id,
    )


def operation_request(
    operation: Operation,
    project_id: uuid.UUID,
    flow_id: uuid.UUID,
    *,
    user_id: str,
    commit: str | None = None,
) -> OperationIntent:
    """Redeploy (`commit`, or the project's current one), restart, roll back or retry a project;
    the coordinator applies it for the owner or an admin, when `infra.project_operations` allows."""
    envelope = {"correlation_id": flow_id, "actor": user_id}
    if operation is Operation.REDEPLOY:
        return ProjectRedeployRequested(
            **envelope, project_id=project_id, user_id=user_id, commit=commit
        )
    if commit is not None:
        raise ValueError(f"only a redeploy takes a commit, not a {operation}")
    if operation is Operation.RESTART:
        return ProjectRestartRequested(**envelope, project_id=project_id, user_id=user_id)
    if operation is Operation.ROLLBACK:
        return ProjectRollbackRequested(**envelope, project_id=project_id, user_id=user_id)
    return ProjectRetryRequested(**envelope, project_id=project_id, user_id=user_id)
def change_request(
    project_id: uuid.UUID, flow_id: uuid.UUID, change: str, *, user_id: str, source: Source
) -> ChangeRequested:
    """Ask for a change to a live project; `user_id` must own it or be an admin."""
    return ChangeRequested(
        correlation_id=flow_id,
        actor=user_id,
        project_id=project_id,
        change=change.strip(),
        user_id=user_id,
        source=source,
    )
