"""Which projects accept a change request: one rule for the doors and the coordinator.

The bot, the API and the CLI refuse a change the coordinator would refuse, so the user hears
why at once; the coordinator applies the same rule again, since an intent on the bus proves
nothing. A live project accepts a change, and so does one whose deploy failed (it has a spec,
a repository, code and a port: a change is a way forward). One change is in flight at a time.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Project, ProjectRevision, ProjectState, RevisionStatus

R = RevisionStatus
#: A revision in one of these states is a change in flight.
OPEN_STATES: frozenset[str] = frozenset(
    {R.SPECIFYING, R.AWAITING_ANSWER, R.RENDERING, R.BUILDING, R.DEPLOYING}
)


def why_not_changeable(project: Project) -> str | None:
    """None when `project` accepts a change; else what the user is told."""
    if project.state == ProjectState.ACTIVE:
        return None
    deployed_once = (
        project.spec is not None
        and project.code_commit is not None
        and project.repo_clone_url is not None
        and project.port is not None
    )
    if project.state == ProjectState.FAILED and deployed_once:
        return None
    return (
        f"project {project.slug or project.id} is {project.state}: only a live project (or one "
        "whose deploy failed) can be changed; wait until it is live"
    )


async def change_in_flight(
    session: AsyncSession, project_id: uuid.UUID, *, lock: bool = False
) -> ProjectRevision | None:
    """The project's open revision, if any; `lock` holds its row until the transaction ends."""
    query = (
        select(ProjectRevision)
        .where(ProjectRevision.project_id == project_id, ProjectRevision.status.in_(OPEN_STATES))
        .order_by(ProjectRevision.number.desc())
        .limit(1)
    )
    return await session.scalar(query.with_for_update() if lock else query)


def in_flight_message(project: Project, revision: ProjectRevision) -> str:
    return (
        f"revision {revision.number} of project {project.slug or project.id} is still in "
        f"progress ({revision.status}); send this change once it is live or has failed"
    )
