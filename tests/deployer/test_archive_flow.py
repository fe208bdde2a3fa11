"""The coordinator's side of archiving, on a real PostgreSQL: stop first, release after.

A project placed on a server must not have its port released (`project.archived`, on which
the provisioner frees it) until the deployer reports `deploy.stopped`; a project that never
got a server has nothing to stop and is released at once. The deployer's side (the service is
really gone and the port is free) is `test_isolation.py`.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.coordinator.service import Coordinator
from contracts import events as ev
from contracts.envelope import Event
from infra.db.models import Project, ProjectState, User

OWNER = "cli:archive-owner"


async def _project(
    sessions: async_sessionmaker[AsyncSession], *, placed: bool
) -> tuple[uuid.UUID, str]:
    slug = f"arch-{uuid.uuid4().hex[:8]}"
    project_id = uuid.uuid4()
    async with sessions.begin() as session:
        if await session.get(User, OWNER) is None:
            session.add(User(id=OWNER, display_name="owner"))
            await session.flush()
        session.add(
            Project(
                id=project_id,
                flow_id=uuid.uuid4(),
                user_id=OWNER,
                description="a service",
                slug=slug,
                state=ProjectState.ACTIVE if placed else ProjectState.SPECIFYING,
                server_name="local" if placed else None,
                host="127.0.0.1" if placed else None,
                port=24567 if placed else None,
            )
        )
    return project_id, slug


async def _archive(
    sessions: async_sessionmaker[AsyncSession], project_id: uuid.UUID
) -> list[Event]:
    request = ev.ProjectArchiveRequested(
        correlation_id=uuid.uuid4(), actor="cli", project_id=project_id, user_id=OWNER
    )
    async with sessions.begin() as session:
        return list(await Coordinator(session, offline=True).archive_requested(request))


async def test_a_placed_project_is_stopped_before_its_port_is_released(
    deploy_sessions: async_sessionmaker[AsyncSession],
) -> None:
    project_id, slug = await _project(deploy_sessions, placed=True)

    emitted = await _archive(deploy_sessions, project_id)

    stops = [e for e in emitted if isinstance(e, ev.DeployStopRequested)]
    assert [type(e) for e in emitted if isinstance(e, ev.ProjectArchived)] == []
    assert len(stops) == 1
    assert (stops[0].slug, stops[0].server_name, stops[0].port) == (slug, "local", 24567)

    stopped = stops[0].derive(
        ev.DeployStopped, actor="deployer", project_id=project_id, server_name="local", port=24567
    )
    async with deploy_sessions.begin() as session:
        released = await Coordinator(session, offline=True).deploy_stopped(stopped)
    assert [type(e) for e in released] == [ev.ProjectArchived]
    async with deploy_sessions() as session:
        project = await session.get(Project, project_id)
    assert project is not None and project.state == ProjectState.ARCHIVED


async def test_a_project_without_a_server_is_released_at_once(
    deploy_sessions: async_sessionmaker[AsyncSession],
) -> None:
    project_id, _ = await _project(deploy_sessions, placed=False)

    emitted = await _archive(deploy_sessions, project_id)

    assert ev.ProjectArchived in [type(e) for e in emitted]
    assert ev.DeployStopRequested not in [type(e) for e in emitted]
