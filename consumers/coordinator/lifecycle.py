"""The project lifecycle as data: which state follows which, and each step's time budget."""

from __future__ import annotations

from datetime import timedelta

from contracts.events import StepState, StepStatus
from infra.db.models import Project, ProjectState

S = ProjectState

#: Allowed transitions; anything else is a bug or a late event and is refused.
TRANSITIONS: dict[ProjectState, frozenset[ProjectState]] = {
    S.REQUESTED: frozenset({S.SPECIFYING, S.FAILED, S.ARCHIVED}),
    S.SPECIFYING: frozenset({S.AWAITING_ANSWER, S.PROVISIONING, S.FAILED, S.ARCHIVED}),
    S.AWAITING_ANSWER: frozenset({S.SPECIFYING, S.FAILED, S.ARCHIVED}),
    S.SPECIFIED: frozenset({S.PROVISIONING, S.FAILED, S.ARCHIVED}),
    S.PROVISIONING: frozenset({S.BUILDING, S.FAILED, S.ARCHIVED}),
    S.BUILDING: frozenset({S.DEPLOYING, S.FAILED, S.ARCHIVED}),
    S.DEPLOYING: frozenset({S.ACTIVE, S.FAILED, S.ARCHIVED, S.AWAITING_SECRETS}),
    S.ACTIVE: frozenset({S.DEPLOYING, S.ARCHIVED}),
    # A retry resumes a failed project at the step that failed (`retry_step`); a
    # failed-after-deploy project also deploys again when a change request revises it.
    S.FAILED: frozenset({S.ARCHIVED, S.SPECIFYING, S.PROVISIONING, S.BUILDING, S.DEPLOYING}),
    S.ARCHIVED: frozenset(),
    # No time budget: the deploy waits for its owner to store the missing secrets.
    S.AWAITING_SECRETS: frozenset({S.DEPLOYING, S.FAILED, S.ARCHIVED}),
}

#: How long a state may last before the coordinator retries its step.
STEP_BUDGET: dict[ProjectState, timedelta] = {
    S.SPECIFYING: timedelta(minutes=10),
    S.PROVISIONING: timedelta(minutes=10),
    S.BUILDING: timedelta(minutes=30),
    S.DEPLOYING: timedelta(minutes=15),
}

#: Retries per step after a timeout, before the project fails.
MAX_STEP_RETRIES = 2

WORKING_STATES = frozenset(STEP_BUDGET)
TERMINAL_STATES = frozenset({S.FAILED, S.ARCHIVED})


class IllegalTransition(Exception):
    pass


def check_transition(current: str, target: ProjectState) -> None:
    if target not in TRANSITIONS[ProjectState(current)]:
        raise IllegalTransition(f"project cannot go from {current} to {target}")


def checklist(project: Project) -> tuple[StepStatus, ...]:
    """The five steps a user sees, derived from what the project row records."""
    state = ProjectState(project.state)
    failed = state == S.FAILED

    def status(done: bool, running: bool) -> StepState:
        if done:
            return StepState.DONE
        if running:
            return StepState.FAILED if failed else StepState.RUNNING
        return StepState.PENDING

    spec_done = project.spec is not None
    started = state not in (S.REQUESTED,)
    return (
        StepStatus(step="spec", state=status(spec_done, started)),
        StepStatus(step="resources", state=status(project.port is not None, spec_done)),
        StepStatus(step="repo", state=status(project.repo_commit is not None, spec_done)),
        StepStatus(
            step="code",
            state=status(project.code_commit is not None, project.repo_commit is not None),
        ),
        StepStatus(
            step="deploy",
            state=status(
                state == S.ACTIVE,
                project.code_commit is not None and project.port is not None,
            ),
        ),
    )


def retry_step(project: Project) -> str:
    """The step a retry of a failed project resumes from: the first one the checklist shows
    failed (spec, resources, repo, code or deploy)."""
    failed = [s.step for s in checklist(project) if s.state == StepState.FAILED]
    return failed[0] if failed else "spec"
