"""On each `reconcile` tick, compare what the git host and the inventory hold with the projects.

Triggered by the scheduler's `ops.tick.reconcile` (and by `orchestrator reconcile`, which
publishes one on demand). It runs in the repo process because only this process can list the
git host: it holds the forge and the GitHub token's Vault policy. Projects, port allocations,
deployments and incidents are rows of the shared database, read here in the tick's transaction.

Findings, each an incident under one natural key (`infra.incidents`), resolved at the first
tick that no longer finds it; every admin with a chat is told when one opens (with what to do)
and when it is resolved, as the server checks tell them:
- `orphan_repository` (`reconcile:repo:<name>`): a repository no project records. It is never
  deleted: an operator adopts it (`orchestrator adopt`) or deletes it on the host.
- `repository_missing` (`reconcile:project-repo:<project id>`): a project that is not archived
  records a repository the host no longer has.
- `orphan_release` (`reconcile:release:<project id>`): deployments recorded for a project
  that does not exist; its service may still run on the server, so only an operator stops it.
- `port_held_by_archived` (`reconcile:port:<server id>:<port>`): an archived project holds a
  port, and the stop of its service is not recorded; freeing it could hand a port that is
  still listening to the next project.

Repaired without an incident (`ResourcesReleased`): a port allocation whose project does not
exist, or whose project is archived with its service's stop recorded (`deploy.stopped` on its
timeline): nothing listens there any more, and the release was lost on the way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import events as ev
from contracts.envelope import Event
from infra.db.models import Deployment, PortAllocation, Project, ProjectEvent, ProjectState, Server
from infra.incidents import RECONCILE_KEY_PREFIX as KEY_PREFIX
from infra.incidents import (
    admin_chats,
    open_incident,
    open_incidents,
    resolve_incident,
    tell_admins,
)

from .ports import GitHost, HostedRepo


@dataclass(frozen=True)
class Finding:
    kind: str
    key: str
    summary: str
    project_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    released: list[ev.ResourcesReleased]


def _short_name(repo: HostedRepo) -> str:
    """`owner/name` on GitHub, `name` on the local forge: the part a project's slug names."""
    return repo.name.rsplit("/", 1)[-1]


class Reconciler:
    def __init__(self, host: GitHost) -> None:
        self._host = host

    async def reconcile(
        self, session: AsyncSession, tick: ev.SchedulerTick, actor: str
    ) -> list[Event]:
        """Find, repair what is safe, and open or resolve one incident per finding."""
        report = await self.check(session, tick, actor)
        incidents = await open_incidents(session, KEY_PREFIX)
        admins = await admin_chats(session)
        emitted: list[Event] = list(report.released)
        told: list[Event] = []  # their own derived-id indexes: one per admin and message

        def tell(text: str) -> None:
            told.extend(tell_admins(tick, admins, actor=actor, index=len(told), text=text))

        current = {finding.key for finding in report.findings}
        for index, finding in enumerate(report.findings):
            if finding.key in incidents:
                continue
            opened = await open_incident(
                session,
                tick,
                actor=actor,
                index=index,
                kind=finding.kind,
                key=finding.key,
                summary=finding.summary,
                project_id=finding.project_id,
            )
            if opened is not None:  # None: another replica opened it and tells the admins
                emitted.append(opened)
                tell(f"Reconciliation: {finding.summary}")
        for index, (key, incident) in enumerate(sorted(incidents.items())):
            if key not in current:
                emitted.append(resolve_incident(incident, tick, actor=actor, index=index))
                tell(f"Reconciliation: resolved: {incident.summary}")
        return emitted + told

    async def check(self, session: AsyncSession, tick: ev.SchedulerTick, actor: str) -> Report:
        repos = await self._host.list_repos()
        projects = {p.id: p for p in (await session.scalars(select(Project))).all()}
        findings = _repository_findings(repos, list(projects.values()))
        findings += await _release_findings(session, projects)
        port_findings, released = await _ports(session, tick, actor, projects)
        return Report(findings + port_findings, released)


def _repository_findings(repos: list[HostedRepo], projects: list[Project]) -> list[Finding]:
    urls = {p.repo_clone_url for p in projects if p.repo_clone_url}
    slugs = {p.slug for p in projects if p.slug}
    findings = [
        Finding(
            "orphan_repository",
            f"{KEY_PREFIX}repo:{repo.name}",
            f"repository {repo.name} ({repo.clone_url}) belongs to no project; adopt it "
            "(orchestrator adopt) or delete it on the git host",
        )
        for repo in repos
        if repo.clone_url not in urls and _short_name(repo) not in slugs
    ]
    host_urls = {repo.clone_url for repo in repos}
    host_names = {_short_name(repo) for repo in repos}
    findings += [
        Finding(
            "repository_missing",
            f"{KEY_PREFIX}project-repo:{p.id}",
            f"project {p.slug} ({p.state}) records repository {p.repo_clone_url}, which the "
            "git host no longer has; restore it or archive the project",
            p.id,
        )
        for p in projects
        if p.repo_clone_url
        and p.state != ProjectState.ARCHIVED
        and p.repo_clone_url not in host_urls
        and p.slug not in host_names
    ]
    return findings


async def _release_findings(
    session: AsyncSession, projects: dict[uuid.UUID, Project]
) -> list[Finding]:
    rows = await session.execute(
        select(Deployment.project_id, Deployment.server_name, Deployment.release).order_by(
            Deployment.project_id, Deployment.id
        )
    )
    orphans: dict[uuid.UUID, list[str]] = {}
    for project_id, server_name, release in rows.all():
        if project_id in projects:
            continue
        orphans.setdefault(project_id, []).append(f"{release} on {server_name}")
    return [
        Finding(
            "orphan_release",
            f"{KEY_PREFIX}release:{project_id}",
            f"releases {', '.join(releases[:5])} belong to project {project_id}, which does "
            "not exist; stop the service on its server and delete the deployment rows",
        )
        for project_id, releases in orphans.items()
    ]


async def _ports(
    session: AsyncSession,
    tick: ev.SchedulerTick,
    actor: str,
    projects: dict[uuid.UUID, Project],
) -> tuple[list[Finding], list[ev.ResourcesReleased]]:
    rows = await session.execute(
        select(PortAllocation, Server.name)
        .join(Server, Server.id == PortAllocation.server_id)
        .order_by(PortAllocation.id)
    )
    allocations = rows.all()
    archived = [
        a.project_id
        for a, _ in allocations
        if (p := projects.get(a.project_id)) and p.state == ProjectState.ARCHIVED
    ]
    stopped = set(
        (
            await session.scalars(
                select(ProjectEvent.project_id).where(
                    ProjectEvent.project_id.in_(archived),
                    ProjectEvent.event_type == ev.DeployStopped.TYPE,
                )
            )
        ).all()
    )
    findings: list[Finding] = []
    released: list[ev.ResourcesReleased] = []
    for allocation, server_name in allocations:
        project = projects.get(allocation.project_id)
        if project is not None and project.state != ProjectState.ARCHIVED:
            continue
        if project is not None and allocation.project_id not in stopped:
            findings.append(
                Finding(
                    "port_held_by_archived",
                    f"{KEY_PREFIX}port:{allocation.server_id}:{allocation.port}",
                    f"archived project {project.slug} still holds port {allocation.port} on "
                    f"{server_name}, and the stop of its service is not recorded; stop the "
                    "service there, then delete its port_allocations row",
                    project.id,
                )
            )
            continue
        await session.execute(delete(PortAllocation).where(PortAllocation.id == allocation.id))
        released.append(
            tick.derive(
                ev.ResourcesReleased,
                actor=actor,
                index=len(released),
                flow_id=project.flow_id if project is not None else None,
                project_id=allocation.project_id,
                server_name=server_name,
                port=allocation.port,
            )
        )
    return findings, released
