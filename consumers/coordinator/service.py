"""The coordinator's use cases: move the state machine, record the timeline, emit the next step.

Every method runs inside the runtime's transaction with the project's row locked, so two
outcome events of one project (resources and code arriving together) serialize on the row
lock and the join below sees both halves: the deploy command cannot be skipped.

Intents are checked here as well as at the doors (`access.py`): an answer, archive request or
secret notice is applied only for the project's owner or an admin, and a request only for an
active user within their quotas (`quotas.py`). A refusal changes nothing but the timeline and
tells the actor. A repository URL not on the configured git host is refused the same way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import events as ev
from contracts.envelope import Event
from contracts.spec import ProjectSpec
from infra.change_rules import in_flight_message, why_not_changeable
from infra.db.models import (
    Project,
    ProjectEvent,
    ProjectRevision,
    ProjectState,
    RevisionStatus,
    User,
)
from infra.project_operations import Operation, serving_commit
from infra.project_operations import refusal as operation_refusal
from infra.repo_urls import ForeignCloneUrl, ForgeSettings, check_clone_url, check_source_url
from infra.settings import QuotaSettings

from . import quotas, revisions, secrets_wait
from .access import Refusal, check_active, check_may_act, known_actor
from .adoption import adopted_slug
from .lifecycle import (
    MAX_STEP_RETRIES,
    STEP_BUDGET,
    TERMINAL_STATES,
    WORKING_STATES,
    check_transition,
    checklist,
    retry_step,
)
from .queues import WorkQueues, with_queue

S = ProjectState
ACTOR = "coordinator"
#: Derived-id index of the commands that start waiting builds (clear of every other index).
_RELEASE_INDEX = 1000


class Coordinator:
    def __init__(
        self,
        session: AsyncSession,
        *,
        offline: bool,
        quota_defaults: QuotaSettings | None = None,
        forge: ForgeSettings | None = None,
        queues: WorkQueues | None = None,
    ) -> None:
        self.session = session
        self.offline = offline
        self.quota_defaults = quota_defaults or QuotaSettings()
        self.forge = forge or ForgeSettings()
        #: The engineer's and deployer's queues, for progress messages (None: not reported).
        self.queues = queues

    # ------------------------------------------------------------------ helpers

    async def _lock(self, project_id: uuid.UUID) -> Project | None:
        return await self.session.scalar(
            select(Project).where(Project.id == project_id).with_for_update()
        )

    async def _timeline(self, project: Project, event: Event, summary: str) -> None:
        await self._record(project.id, project.state, event, summary)

    async def _record(
        self, project_id: uuid.UUID, state: str | None, event: Event, summary: str
    ) -> None:
        await self.session.execute(
            pg_insert(ProjectEvent)
            .values(
                project_id=project_id,
                event_id=event.event_id,
                event_type=event.TYPE,
                actor=event.actor,
                summary=summary,
                state=state,
                occurred_at=event.occurred_at,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
        )

    async def _refuse(
        self, event: Event, project_id: uuid.UUID, state: str | None, refusal: Refusal
    ) -> list[Event]:
        """Record the refusal on the project's timeline and tell the actor; change nothing else."""
        await self._record(project_id, state, event, refusal.reason)
        actor = refusal.actor
        if actor is None:
            # A stranger or an anonymous event: nobody to tell, and no chat to message on
            # the word of an unverified event.
            return []
        return [
            event.derive(
                ev.NotificationRequested,
                actor=ACTOR,
                project_id=project_id,
                user_id=actor.id,
                chat_id=actor.chat_id,
                kind=ev.NotificationKind.FAILURE,
                text=refusal.reason[0].upper() + refusal.reason[1:],
                offline=self.offline,
            )
        ]

    def _move(self, project: Project, target: ProjectState) -> None:
        check_transition(project.state, target)
        project.state = target
        project.version += 1
        budget = STEP_BUDGET.get(target)
        project.step_deadline = datetime.now(UTC) + budget if budget else None

    def _notify(
        self,
        cause: Event,
        project: Project,
        kind: ev.NotificationKind,
        text: str,
        index: int = 0,
    ) -> ev.NotificationRequested:
        return cause.derive(
            ev.NotificationRequested,
            actor=ACTOR,
            index=index,
            flow_id=project.flow_id,
            project_id=project.id,
            user_id=project.user_id,
            chat_id=project.chat_id,
            kind=kind,
            text=text,
            steps=checklist(project),
            offline=project.offline,
        )

    def _progress(self, cause: Event, project: Project, text: str) -> ev.NotificationRequested:
        return self._notify(cause, project, ev.NotificationKind.PROGRESS, text)

    def _fail(self, cause: Event, project: Project, reason: str) -> list[Event]:
        self._move(project, S.FAILED)
        project.error = reason
        return [
            self._progress(cause, project, f"{project.name or 'Project'}: failed"),
            self._notify(cause, project, ev.NotificationKind.FAILURE, reason, index=1),
        ]

    def _spec(self, project: Project) -> ProjectSpec:
        assert project.spec is not None
        return ProjectSpec.model_validate(project.spec)

    async def _create_project(
        self,
        event: ev.ProjectRequested | ev.ProjectAdoptRequested,
        description: str,
        summary: str,
        **columns: str,
    ) -> Project:
        """A new project row for an accepted intent, on its timeline and moved to specifying."""
        project = Project(
            id=event.project_id,
            flow_id=event.correlation_id,
            user_id=event.user_id,
            chat_id=event.chat_id,
            description=description,
            state=S.REQUESTED,
            version=0,
            answers=[],
            attempts={},
            offline=self.offline,
            **columns,
        )
        self.session.add(project)
        await self.session.flush()
        await self._timeline(project, event, summary)
        self._move(project, S.SPECIFYING)
        return project

    # ------------------------------------------------------------------ intents

    async def project_requested(self, event: ev.ProjectRequested) -> list[Event]:
        if await self.session.get(Project, event.project_id) is not None:
            return []  # the same request through another producer retry: already created
        requester = await quotas.lock_user(self.session, event.user_id)
        refusal = check_active(requester, event.user_id) or await self._over_daily_quota(
            event.user_id, requester
        )
        if refusal is not None:
            return await self._refuse(event, event.project_id, None, refusal)
        assert requester is not None
        requester.chat_id = event.chat_id
        project = await self._create_project(
            event, event.description, f"requested via {event.source}"
        )
        mode = "offline mode (no LLM configured)" if self.offline else "LLM mode"
        return [
            self._progress(event, project, f"Project accepted ({mode}). Writing the spec…"),
            event.derive(
                ev.SpecRequested, actor=ACTOR, project_id=project.id, description=event.description
            ),
        ]

    async def adopt_requested(self, event: ev.ProjectAdoptRequested) -> list[Event]:
        """A person adopts an existing repository: a project whose spec the repo step writes.

        The same checks as a new project (active user, daily quota), plus the repository's
        host: only the configured git host is fetched from. The repo step inspects and imports
        it (`project.repo.adopt.requested`); the analyst is not involved.
        """
        if await self.session.get(Project, event.project_id) is not None:
            return []
        requester = await quotas.lock_user(self.session, event.user_id)
        refusal = check_active(requester, event.user_id) or await self._over_daily_quota(
            event.user_id, requester
        )
        if refusal is None:
            try:
                check_source_url(event.repository_url, self.forge)
            except ForeignCloneUrl as exc:
                refusal = Refusal(f"refused: {exc}", requester)
        if refusal is not None:
            return await self._refuse(event, event.project_id, None, refusal)
        assert requester is not None
        requester.chat_id = event.chat_id
        slug = adopted_slug(event.repository_url, event.project_id, self.forge)
        taken = await self.session.scalar(select(Project.id).where(Project.slug == slug))
        if taken is not None:
            slug = f"{slug[:43].rstrip('-')}-{event.project_id.hex[:6]}"
        project = await self._create_project(
            event,
            f"Adopt {event.repository_url}",
            f"adopt {event.repository_url} via {event.source}",
            adopted_from=event.repository_url,
            slug=slug,
        )
        return [
            self._progress(
                event, project, f"Adopting {event.repository_url}: reading the repository…"
            ),
            self._adopt_request(event, project),
        ]

    def _adopt_request(self, cause: Event, project: Project, index: int = 0) -> Event:
        assert project.adopted_from and project.slug
        return cause.derive(
            ev.RepoAdoptRequested,
            actor=ACTOR,
            index=index,
            flow_id=project.flow_id,
            project_id=project.id,
            repository_url=project.adopted_from,
            slug=project.slug,
        )

    async def clarification_answered(self, event: ev.ClarificationAnswered) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is None:
            return []
        refusal = await check_may_act(self.session, event.user_id, project, "answer for")
        if refusal is not None:
            return await self._refuse(event, project.id, project.state, refusal)
        if project.state != S.AWAITING_ANSWER:
            revision_answered = await self._revision_answer(event, project)
            if revision_answered is not None:
                return revision_answered
            await self._timeline(project, event, "answer ignored: no open question")
            return [
                self._notify(
                    event,
                    project,
                    ev.NotificationKind.INFO,
                    "There is no open question for this project; nothing to answer.",
                )
            ]
        project.answers = [*project.answers, event.answer]
        self._move(project, S.SPECIFYING)
        await self._timeline(project, event, "answer received")
        return [
            self._progress(event, project, "Thanks! Continuing the spec…"),
            event.derive(
                ev.SpecRequested,
                actor=ACTOR,
                flow_id=project.flow_id,
                project_id=project.id,
                description=project.description,
                answers=tuple(project.answers),
            ),
        ]

    async def archive_requested(self, event: ev.ProjectArchiveRequested) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is None:
            return []
        refusal = await check_may_act(self.session, event.user_id, project, "archive")
        if refusal is not None:
            return await self._refuse(event, project.id, project.state, refusal)
        if project.state == S.ARCHIVED:
            return []
        was_building = self._build_running(project)
        project.build_queued_at = None
        self._move(project, S.ARCHIVED)
        await self._timeline(project, event, event.reason or "archived")
        return [
            self._stop_before_release(event, project),
            self._notify(event, project, ev.NotificationKind.INFO, "Project archived."),
            *(await self._start_waiting_builds(event, project.user_id) if was_building else []),
        ]

    def _stop_before_release(self, event: Event, project: Project) -> Event:
        """A project placed on a server is stopped there first (`DeployStopped` then releases
        its port), so a freed port is never handed to the next project while this one listens."""
        if project.slug and project.server_name and project.host and project.port is not None:
            return event.derive(
                ev.DeployStopRequested,
                actor=ACTOR,
                flow_id=project.flow_id,
                project_id=project.id,
                slug=project.slug,
                server_name=project.server_name,
                host=project.host,
                port=project.port,
            )
        return event.derive(
            ev.ProjectArchived, actor=ACTOR, flow_id=project.flow_id, project_id=project.id
        )

    async def deploy_stopped(self, event: ev.DeployStopped) -> list[Event]:
        """The archived project's processes, releases and user are gone: release its port now."""
        project = await self._lock(event.project_id)
        if project is None or project.state != S.ARCHIVED:
            return []
        detail = f" ({event.detail})" if event.detail else ""
        await self._timeline(
            project,
            event,
            f"service stopped on {event.server_name}, port {event.port} free{detail}",
        )
        return [
            event.derive(
                ev.ProjectArchived, actor=ACTOR, flow_id=project.flow_id, project_id=project.id
            )
        ]

    async def secret_stored(self, event: ev.SecretStored) -> list[Event]:
        """A secret's name was announced: on the timeline for the owner or an admin only."""
        project = await self._lock(event.project_id)
        if project is None:
            return []
        refusal = await check_may_act(
            self.session, event.user_id, project, f"store secret {event.name} for"
        )
        if refusal is not None:
            return await self._refuse(event, project.id, project.state, refusal)
        await self._timeline(project, event, f"secret {event.name} stored by {event.user_id}")
        return await self._secret_arrived(event, project)

    async def _secret_arrived(self, event: ev.SecretStored, project: Project) -> list[Event]:
        """A waiting deploy loses one missing name; the last one resumes the deploy."""
        if project.state != S.AWAITING_SECRETS or event.name not in project.missing_secrets:
            return []
        project.missing_secrets = [n for n in project.missing_secrets if n != event.name]
        if not project.missing_secrets:
            return await self._resume_deploy(event, project, "every missing secret is stored")
        project.version += 1
        text = secrets_wait.still_waiting_message(project, event.name, project.missing_secrets)
        return [self._notify(event, project, ev.NotificationKind.INFO, text)]

    async def _resume_deploy(self, cause: Event, project: Project, why: str) -> list[Event]:
        self._move(project, S.DEPLOYING)
        project.missing_secrets = []
        command = self._deploy_request(cause, project)
        await self._record(project.id, project.state, command, f"deploy resumed: {why}")
        return [self._progress(cause, project, f"Deploying again: {why}…"), command]

    async def deploy_awaiting_secrets(self, event: ev.DeployAwaitingSecrets) -> list[Event]:
        """The deploy lacks secrets: the project waits for them instead of failing.

        A secret stored while the deployer was reading Vault (its notice recorded at or after
        `checked_at`) may fill a gap this event names; then the deploy is asked for again at
        once, and the deployer reads Vault afresh. Each round's `checked_at` is later than the
        notices before it, so this repeats at most once per stored secret.
        """
        project = await self._lock(event.project_id)
        if project is None:
            return []
        missing = list(dict.fromkeys(event.missing))
        if project.state == S.ACTIVE:
            reason = secrets_wait.live_release_needs_secrets(missing)
            project.error = reason
            project.version += 1
            await self._timeline(project, event, secrets_wait.waiting_summary(missing))
            text = "\n".join(
                [reason, *(secrets_wait.how_to_store(project, name) for name in missing)]
            )
            return [self._notify(event, project, ev.NotificationKind.FAILURE, text)]
        if project.state != S.DEPLOYING:
            return []
        self._move(project, S.AWAITING_SECRETS)
        project.missing_secrets = missing
        await self._timeline(project, event, secrets_wait.waiting_summary(missing))
        if await self._secret_stored_since(project.id, event.checked_at):
            return await self._resume_deploy(
                event, project, "a secret was stored while the deployer checked Vault"
            )
        name = project.name or "Project"
        return [
            self._progress(event, project, f"{name}: waiting for secrets ({', '.join(missing)})"),
            self._notify(
                event,
                project,
                ev.NotificationKind.INFO,
                secrets_wait.waiting_message(project, missing),
                index=1,
            ),
        ]

    async def _secret_stored_since(self, project_id: uuid.UUID, since: datetime) -> bool:
        found = await self.session.scalar(
            select(ProjectEvent.id)
            .where(ProjectEvent.project_id == project_id)
            .where(ProjectEvent.event_type == ev.SecretStored.TYPE)
            .where(ProjectEvent.occurred_at >= since)
            .limit(1)
        )
        return found is not None

    async def _over_daily_quota(self, user_id: str, user: User | None) -> Refusal | None:
        limit = quotas.projects_per_day(user, self.quota_defaults)
        recent = await quotas.projects_since(self.session, user_id, datetime.now(UTC) - quotas.DAY)
        if len(recent) < limit:
            return None
        when = "an admin raises your limit"
        if limit > 0:
            # The request fits again once the oldest of the last `limit` projects is a day old.
            next_slot = (recent[-limit] + quotas.DAY).strftime("%Y-%m-%d %H:%M UTC")
            when = f"{next_slot} (or when an admin raises your limit)"
        return Refusal(
            f"refused: the quota is {limit} new project(s) per day and you have started "
            f"{len(recent)} in the last 24 hours; you can start the next one after {when}",
            user,
        )

    # ------------------------------------------------------------------ analyst

    async def clarification_asked(self, event: ev.ClarificationAsked) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is not None and project.state in (S.ACTIVE, S.FAILED):
            return await self._revision_question(event, project)
        if project is None or project.state != S.SPECIFYING:
            return []
        self._move(project, S.AWAITING_ANSWER)
        await self._timeline(project, event, f"question: {event.question}")
        return [self._notify(event, project, ev.NotificationKind.QUESTION, event.question)]

    async def spec_ready(self, event: ev.SpecReady) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is None or project.state != S.SPECIFYING:
            return []
        spec = await self._unique_slug(project, event.spec)
        project.spec = spec.model_dump(mode="json")
        project.name = spec.name
        project.slug = spec.slug
        self._move(project, S.PROVISIONING)
        await self._timeline(project, event, f"spec ready: {spec.name} ({', '.join(spec.kinds)})")
        return [
            self._progress(event, project, f"Spec ready: {spec.name}. {spec.summary}"),
            self._provision_request(event, project),
            event.derive(
                ev.RepoRequested,
                actor=ACTOR,
                flow_id=project.flow_id,
                project_id=project.id,
                spec=spec,
            ),
        ]

    async def _unique_slug(self, project: Project, spec: ProjectSpec) -> ProjectSpec:
        """The slug names the repository and the deploy directory: one project per slug.

        A taken slug gets the project id's first characters appended; the unique index on
        `projects.slug` settles a race between two projects (the loser's step is retried).
        """
        taken = await self.session.scalar(
            select(Project.id).where(Project.slug == spec.slug, Project.id != project.id)
        )
        if taken is None:
            return spec
        suffix = project.id.hex[:6]
        return spec.model_copy(update={"slug": f"{spec.slug[:43].rstrip('-')}-{suffix}"})

    async def spec_failed(self, event: ev.SpecFailed) -> list[Event]:
        return await self._step_failed(event, event.project_id, f"Spec failed: {event.reason}")

    # ------------------------------------------------------------------ provisioner, repo

    async def resources_allocated(self, event: ev.ResourcesAllocated) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is None:
            return []
        project.server_name, project.host, project.port = event.server_name, event.host, event.port
        await self._timeline(project, event, f"port {event.port} on {event.server_name}")
        if project.state in TERMINAL_STATES:
            return []
        deploy = self._deploy_if_ready(event, project)
        ready = f"Resources ready: {event.host}:{event.port}"
        if deploy:
            ready = await with_queue(self.queues, "deploy", ready)
        return [self._progress(event, project, ready), *deploy]

    async def provisioning_failed(self, event: ev.ProvisioningFailed) -> list[Event]:
        return await self._step_failed(
            event, event.project_id, f"No server for this project: {event.reason}"
        )

    async def repo_created(self, event: ev.RepoCreated) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is None or project.state != S.PROVISIONING:
            return []
        try:
            check_clone_url(event.clone_url, self.forge)
        except ForeignCloneUrl as exc:
            # Nobody to tell: the repo step is not a person. The real outcome still arrives.
            return await self._refuse(
                event, project.id, project.state, Refusal(f"refused: {exc}", None)
            )
        project.repo_clone_url = event.clone_url
        project.repo_branch = event.default_branch
        project.repo_commit = event.commit
        self._move(project, S.BUILDING)
        summary = f"repository {event.repo_name} at {event.commit[:8]}"
        ready = f"Repository ready: {event.web_url or event.clone_url}"
        ahead = await self._builds_ahead(project)
        if ahead:
            project.build_queued_at = datetime.now(UTC)
            project.step_deadline = None  # waiting is not the build step timing out
            await self._timeline(project, event, f"{summary}; queued: {ahead} builds ahead")
            return [self._progress(event, project, f"{ready}. queued: {ahead} builds ahead of you")]
        await self._timeline(project, event, summary)
        ready = await with_queue(self.queues, "build", ready)
        return [self._progress(event, project, ready), self._code_request(event, project)]

    async def repo_adopted(self, event: ev.RepoAdopted) -> list[Event]:
        """The adopted repository can run: its spec and commit are the project's; the engineer
        verifies it (its own tests in the sandbox, no code written) while a port is found."""
        project = await self._lock(event.project_id)
        if project is None or project.state != S.SPECIFYING or project.adopted_from is None:
            return []
        try:
            check_clone_url(event.clone_url, self.forge)
        except ForeignCloneUrl as exc:
            return await self._refuse(
                event, project.id, project.state, Refusal(f"refused: {exc}", None)
            )
        spec = event.spec.model_copy(update={"slug": project.slug or event.spec.slug})
        project.spec = spec.model_dump(mode="json")
        project.name = spec.name
        project.repo_clone_url = event.clone_url
        project.repo_branch = event.default_branch
        project.repo_commit = event.commit
        self._move(project, S.PROVISIONING)
        secrets = ", ".join(spec.secret_names) or "none"
        await self._timeline(
            project,
            event,
            f"inspected: {'; '.join(event.findings)[:1500]}; imported as {event.repo_name} "
            f"at {event.commit[:8]}",
        )
        self._move(project, S.BUILDING)
        found = (
            f"Repository read: {spec.name}, imported at {event.commit[:8]}. "
            f"Secrets it declares: {secrets}. Running its tests…"
        )
        commands: list[Event] = [self._provision_request(event, project)]
        ahead = await self._builds_ahead(project)
        if ahead:
            project.build_queued_at = datetime.now(UTC)
            project.step_deadline = None
            found += f" queued: {ahead} builds ahead of you"
        else:
            found = await with_queue(self.queues, "build", found)
            commands.append(self._code_request(event, project))
        return [self._progress(event, project, found), *commands]

    @staticmethod
    def _build_running(project: Project) -> bool:
        return (
            project.state == S.BUILDING
            and project.code_commit is None
            and project.build_queued_at is None
        )

    async def _builds_ahead(self, project: Project) -> int:
        """0 when the owner has a free build slot; else how many builds run or wait before it."""
        owner = await quotas.lock_user(self.session, project.user_id)
        limit = quotas.builds_at_once(owner, self.quota_defaults)
        running = await quotas.running_builds(self.session, project.user_id, exclude=project.id)
        if running < limit:
            return 0
        return running + await quotas.waiting_builds(self.session, project.user_id)

    async def _start_waiting_builds(
        self, cause: Event, user_id: str, first_index: int = _RELEASE_INDEX
    ) -> list[Event]:
        """Start the user's oldest waiting builds while they have free build slots.

        The commands are derived from `cause` with indexes from `first_index` up, so a redelivered
        cause re-emits the same ids and each started build gets its own.
        """
        owner = await quotas.lock_user(self.session, user_id)
        limit = quotas.builds_at_once(owner, self.quota_defaults)
        running = await quotas.running_builds(self.session, user_id)
        started: list[Event] = []
        index = first_index
        while running < limit:
            project = await quotas.oldest_waiting(self.session, user_id)
            if project is None:
                break
            project.build_queued_at = None
            project.step_deadline = datetime.now(UTC) + STEP_BUDGET[S.BUILDING]
            project.version += 1
            await self.session.flush()  # the next lookup must not find this one again
            command = self._code_request(cause, project, index)
            await self._record(project.id, project.state, command, "build started: a slot is free")
            started += [
                self._notify(
                    cause,
                    project,
                    ev.NotificationKind.PROGRESS,
                    "A build slot is free: writing the code…",
                    index=index,
                ),
                command,
            ]
            running += 1
            index += 1
        return started

    def _provision_request(
        self, cause: Event, project: Project, index: int = 0
    ) -> ev.ProvisionRequested:
        return cause.derive(
            ev.ProvisionRequested,
            actor=ACTOR,
            index=index,
            flow_id=project.flow_id,
            project_id=project.id,
            slug=self._spec(project).slug,
        )

    def _code_request(self, cause: Event, project: Project, index: int = 0) -> ev.CodeRequested:
        assert project.repo_clone_url and project.repo_commit
        return cause.derive(
            ev.CodeRequested,
            actor=ACTOR,
            index=index,
            flow_id=project.flow_id,
            project_id=project.id,
            spec=self._spec(project),
            clone_url=project.repo_clone_url,
            base_commit=project.repo_commit,
            default_branch=project.repo_branch or "main",
            verify_only=project.adopted_from is not None,
        )

    async def repo_failed(self, event: ev.RepoFailed) -> list[Event]:
        return await self._step_failed(
            event, event.project_id, f"Repository failed: {event.reason}"
        )

    # ------------------------------------------------------------------ engineer, deployer

    async def code_generated(self, event: ev.CodeGenerated) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is not None and project.state in (S.ACTIVE, S.FAILED):
            return await self._revision_code_generated(event, project)
        if project is None or project.state != S.BUILDING:
            return []
        project.code_commit = event.commit
        await self._timeline(
            project,
            event,
            f"code {event.commit[:8]}: {event.tests_passed} tests passed ({event.mode})",
        )
        deploy = self._deploy_if_ready(event, project)
        ready = f"Code ready: {event.tests_passed} tests pass ({event.mode})."
        if deploy:
            ready = await with_queue(self.queues, "deploy", ready)
        return [
            self._progress(event, project, ready),
            *deploy,
            *await self._start_waiting_builds(event, project.user_id),
        ]

    def _deploy_if_ready(self, cause: Event, project: Project) -> list[Event]:
        """The join: deploy exactly when code and resources are both recorded."""
        if project.state != S.BUILDING or project.code_commit is None or project.port is None:
            return []
        self._move(project, S.DEPLOYING)
        return [self._deploy_request(cause, project)]

    def _deploy_request(self, cause: Event, project: Project, index: int = 0) -> Event:
        assert project.code_commit and project.repo_clone_url and project.port
        assert project.server_name and project.host
        return cause.derive(
            ev.DeployRequested,
            actor=ACTOR,
            index=index,
            flow_id=project.flow_id,
            project_id=project.id,
            spec=self._spec(project),
            clone_url=project.repo_clone_url,
            commit=project.code_commit,
            server_name=project.server_name,
            host=project.host,
            port=project.port,
        )

    async def code_failed(self, event: ev.CodeFailed) -> list[Event]:
        changed = await self._lock(event.project_id)
        if changed is not None and changed.state in (S.ACTIVE, S.FAILED):
            return await self._revision_code_failed(event, changed)
        failed = await self._step_failed(event, event.project_id, f"Code failed: {event.reason}")
        project = await self.session.get(Project, event.project_id)
        if project is None:
            return failed
        return [*failed, *await self._start_waiting_builds(event, project.user_id)]

    async def deploy_succeeded(self, event: ev.DeploySucceeded) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is not None and project.state == S.ACTIVE:
            # A redeploy, rollback or repeated deploy of a live project.
            project.url, project.error = event.url, None
            return [
                *await self._live_release_deployed(event, project),
                *await self._revision_released(event, project),
            ]
        if project is None or project.state != S.DEPLOYING:
            return []
        project.url = event.url
        self._record_live(project, event.commit)
        self._move(project, S.ACTIVE)
        await self._timeline(project, event, f"live at {event.url} (release {event.release})")
        return [
            *await self._revision_released(event, project),
            self._progress(event, project, f"Deployed: {event.url}"),
            self._notify(
                event,
                project,
                ev.NotificationKind.DONE,
                f"{project.name} is live: {event.url}",
                index=1,
            ),
        ]

    async def deploy_failed(self, event: ev.DeployFailed) -> list[Event]:
        note = " The previous release is still serving." if event.rolled_back else ""
        reason = f"Deploy failed: {event.reason}.{note}"
        project = await self._lock(event.project_id)
        revision_closed = (
            [] if project is None else await self._revision_deploy_failed(event, project)
        )
        if project is not None and project.state == S.ACTIVE:
            # A new release of a live project did not come up and the previous one serves
            # again: the project stays live, with the error recorded and the user told.
            project.error = reason
            project.version += 1
            self._end_operation(project)
            await self._timeline(project, event, reason)
            return [
                *revision_closed,
                self._notify(event, project, ev.NotificationKind.FAILURE, reason),
            ]
        return [*revision_closed, *await self._step_failed(event, event.project_id, reason)]

    async def deploy_rolled_back(self, event: ev.DeployRolledBack) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is not None:
            await self._timeline(
                project,
                event,
                f"rolled back from {event.failed_release} to {event.restored_release}",
            )
        return []

    async def _step_failed(self, event: Event, project_id: uuid.UUID, reason: str) -> list[Event]:
        project = await self._lock(project_id)
        if project is None:
            return []
        await self._timeline(project, event, reason)
        if project.state in TERMINAL_STATES:
            return []
        return self._fail(event, project, reason)

    # ------------------------------------------------------------------ timeouts

    async def check_timeouts(self, tick: ev.SchedulerTick) -> list[Event]:
        """Retry the step of every project past its deadline, or fail it after the bound."""
        overdue = (
            await self.session.scalars(
                select(Project)
                .where(Project.state.in_([s.value for s in WORKING_STATES]))
                .where(Project.step_deadline < datetime.now(UTC))
                .order_by(Project.step_deadline)
                .limit(100)
                .with_for_update(skip_locked=True)
            )
        ).all()
        emitted: list[Event] = []
        for index, project in enumerate(overdue):
            emitted.extend(self._retry_step(tick, project, index))
        # A build that timed out for good frees a slot, and a start skipped over a locked row
        # is caught up here: every user with a waiting build gets their free slots filled.
        index = _RELEASE_INDEX
        for user_id in await quotas.users_with_waiting_builds(self.session):
            started = await self._start_waiting_builds(tick, user_id, index)
            index += sum(isinstance(e, ev.CodeRequested) for e in started)
            emitted.extend(started)
        return emitted

    def _retry_step(self, tick: ev.SchedulerTick, project: Project, index: int) -> list[Event]:
        state = ProjectState(project.state)
        used = int(project.attempts.get(state.value, 0))
        if used >= MAX_STEP_RETRIES:
            return self._fail(
                tick, project, f"The {state.value} step timed out {used + 1} times; giving up."
            )
        project.attempts = {**project.attempts, state.value: used + 1}
        budget = STEP_BUDGET[state]
        project.step_deadline = datetime.now(UTC) + budget
        project.version += 1
        commands: list[Event] = []
        if state == S.SPECIFYING and project.adopted_from is not None:
            commands.append(self._adopt_request(tick, project, index))
        elif state == S.SPECIFYING:
            commands.append(
                tick.derive(
                    ev.SpecRequested,
                    actor=ACTOR,
                    index=index,
                    flow_id=project.flow_id,
                    project_id=project.id,
                    description=project.description,
                    answers=tuple(project.answers),
                )
            )
        elif state == S.PROVISIONING:
            spec = self._spec(project)
            if project.port is None:
                commands.append(self._provision_request(tick, project, index))
            commands.append(
                tick.derive(
                    ev.RepoRequested,
                    actor=ACTOR,
                    index=index,
                    flow_id=project.flow_id,
                    project_id=project.id,
                    spec=spec,
                )
            )
        elif state == S.BUILDING and project.code_commit is None:
            commands.append(self._code_request(tick, project, index))
        elif state == S.BUILDING:
            commands.append(self._provision_request(tick, project, index))
        elif state == S.DEPLOYING:
            commands.append(self._deploy_request(tick, project, index))
        return commands

    # ------------------------------------------------------------------ redeploy, restart,
    # rollback, retry: a person's operations on a project after its first deploy. The rules of
    # when each is allowed live in `infra.project_operations`, shared with the doors.

    async def _operation_target(
        self, event: Event, project_id: uuid.UUID, user_id: str, operation: Operation
    ) -> tuple[Project | None, list[Event]]:
        """The locked project when `user_id` may apply `operation` to it now; else the refusal."""
        project = await self._lock(project_id)
        if project is None:
            return None, []
        refusal = await check_may_act(self.session, user_id, project, operation.value)
        if refusal is None:
            reason = operation_refusal(project, operation)
            if reason is not None:
                refusal = Refusal(f"refused: {reason}", await known_actor(self.session, user_id))
        if refusal is not None:
            return None, await self._refuse(event, project.id, project.state, refusal)
        return project, []

    def _start_operation(self, project: Project, operation: Operation) -> None:
        project.operation = operation.value
        project.operation_started_at = datetime.now(UTC)
        project.version += 1

    @staticmethod
    def _end_operation(project: Project) -> None:
        project.operation = None
        project.operation_started_at = None

    @staticmethod
    def _record_live(project: Project, commit: str) -> None:
        """`commit` serves now; the one it replaced becomes what a rollback restores."""
        if commit != project.live_commit:
            project.previous_commit = project.live_commit
            project.live_commit = commit

    async def redeploy_requested(self, event: ev.ProjectRedeployRequested) -> list[Event]:
        """Deploy a live project again: its current commit (a no-op when it serves already) or
        the commit the person named, with the deployer's usual rollback on failure."""
        project, refused = await self._operation_target(
            event, event.project_id, event.user_id, Operation.REDEPLOY
        )
        if project is None:
            return refused
        commit = event.commit or project.code_commit
        assert commit is not None  # a live project has its code
        self._start_operation(project, Operation.REDEPLOY)
        await self._timeline(project, event, f"redeploy of {commit[:8]} asked by {event.user_id}")
        return [
            self._progress(event, project, f"Redeploying {commit[:8]}…"),
            self._deploy_request(event, project).model_copy(update={"commit": commit}),
        ]

    async def rollback_requested(self, event: ev.ProjectRollbackRequested) -> list[Event]:
        """Serve the previous release again: a deploy of its commit, whose checkout is still on
        the server, so a release that does not come up leaves the current one serving."""
        project, refused = await self._operation_target(
            event, event.project_id, event.user_id, Operation.ROLLBACK
        )
        if project is None:
            return refused
        previous = project.previous_commit
        assert previous is not None  # the rule refuses a rollback without one
        self._start_operation(project, Operation.ROLLBACK)
        await self._timeline(project, event, f"rollback to {previous[:8]} asked by {event.user_id}")
        return [
            self._progress(event, project, f"Rolling back to {previous[:8]}…"),
            self._deploy_request(event, project).model_copy(update={"commit": previous}),
        ]

    async def restart_requested(self, event: ev.ProjectRestartRequested) -> list[Event]:
        """Restart the serving release where it is: no checkout, no new `.env`."""
        project, refused = await self._operation_target(
            event, event.project_id, event.user_id, Operation.RESTART
        )
        if project is None:
            return refused
        commit = serving_commit(project)
        assert commit and project.slug and project.server_name and project.host and project.port
        self._start_operation(project, Operation.RESTART)
        await self._timeline(project, event, f"restart asked by {event.user_id}")
        return [
            self._progress(event, project, "Restarting the service…"),
            event.derive(
                ev.DeployRestartRequested,
                actor=ACTOR,
                project_id=project.id,
                slug=project.slug,
                commit=commit,
                server_name=project.server_name,
                host=project.host,
                port=project.port,
            ),
        ]

    async def deploy_restarted(self, event: ev.DeployRestarted) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is None or project.state != S.ACTIVE:
            return []
        asked = project.operation == Operation.RESTART
        self._end_operation(project)
        project.url, project.error = event.url, None
        await self._timeline(project, event, f"release {event.release} restarted at {event.url}")
        if not asked:
            return []
        text = f"{project.name} restarted: {event.url}"
        return [self._notify(event, project, ev.NotificationKind.DONE, text)]

    async def _live_release_deployed(
        self, event: ev.DeploySucceeded, project: Project
    ) -> list[Event]:
        """Record which release serves now and tell whoever asked for it."""
        operation = project.operation
        self._record_live(project, event.commit)
        self._end_operation(project)
        commit = event.commit[:8]
        if event.noop:
            summary = f"{commit} already live at {event.url}: nothing was restarted"
        elif operation == Operation.ROLLBACK:
            summary = f"rolled back to {commit} (release {event.release}) at {event.url}"
        else:
            summary = f"redeployed {commit} (release {event.release}) at {event.url}"
        await self._timeline(project, event, summary)
        if operation is None:
            return []  # a repeated deploy nobody asked about: the user already has the URL
        text = f"{project.name}: {summary}"
        return [self._notify(event, project, ev.NotificationKind.DONE, text)]

    async def retry_requested(self, event: ev.ProjectRetryRequested) -> list[Event]:
        """Resume a failed project at the step that failed; every earlier result is kept."""
        project, refused = await self._operation_target(
            event, event.project_id, event.user_id, Operation.RETRY
        )
        if project is None:
            return refused
        step = retry_step(project)
        project.error = None
        project.attempts = {}
        commands = await self._resume(event, project)
        await self._timeline(project, event, f"retry from the {step} step asked by {event.user_id}")
        return [self._progress(event, project, f"Retrying from the {step} step…"), *commands]

    async def _resume(self, cause: Event, project: Project) -> list[Event]:
        """Move a failed project back to the first step it has no result for and ask for it."""
        if project.spec is None and project.adopted_from is not None:
            self._move(project, S.SPECIFYING)
            return [self._adopt_request(cause, project)]
        if project.spec is None:
            self._move(project, S.SPECIFYING)
            return [
                cause.derive(
                    ev.SpecRequested,
                    actor=ACTOR,
                    project_id=project.id,
                    description=project.description,
                    answers=tuple(project.answers),
                )
            ]
        provision: list[Event] = (
            [self._provision_request(cause, project)] if project.port is None else []
        )
        if project.repo_commit is None:
            self._move(project, S.PROVISIONING)
            repo = cause.derive(
                ev.RepoRequested, actor=ACTOR, project_id=project.id, spec=self._spec(project)
            )
            return [*provision, repo]
        if project.code_commit is None:
            self._move(project, S.BUILDING)
            ahead = await self._builds_ahead(project)
            if ahead:
                project.build_queued_at = datetime.now(UTC)
                project.step_deadline = None
                return provision
            return [*provision, self._code_request(cause, project)]
        if project.port is None:
            self._move(project, S.BUILDING)  # the allocation completes the join and deploys
            return provision
        self._move(project, S.DEPLOYING)
        return [self._deploy_request(cause, project)]
    # ------------------------------------------------------------------ change requests

    async def change_requested(self, event: ev.ChangeRequested) -> list[Event]:
        """Open the next spec revision of a live project and ask the analyst to write it."""
        project = await self._lock(event.project_id)
        if project is None:
            return []
        refusal = await check_may_act(self.session, event.user_id, project, "change")
        if refusal is None:
            refusal = await self._change_refusal(project, event.user_id)
        if refusal is not None:
            return await self._refuse(event, project.id, project.state, refusal)
        revision = await revisions.start(self.session, project, event.change, event.user_id)
        await self._revision_note(
            project, event, revision.number, f"requested: {_clip(event.change)}"
        )
        return [
            self._notify(
                event,
                project,
                ev.NotificationKind.INFO,
                f"Change accepted as revision {revision.number} of {project.name}. "
                "Revising the spec…" + self._still_serving(project),
            ),
            self._revision_request(event, project, revision),
        ]

    async def _change_refusal(self, project: Project, user_id: str) -> Refusal | None:
        """Why `project` cannot take a change now (its state, or another change in flight)."""
        actor = await known_actor(self.session, user_id)
        reason = why_not_changeable(project)
        if reason is not None:
            return Refusal(f"refused: {reason}", actor)
        in_flight = await revisions.open_revision(self.session, project.id)
        if in_flight is None:
            return None
        if revisions.is_stale(in_flight):
            in_flight.status = RevisionStatus.ABANDONED
            in_flight.reason = "abandoned: no outcome within the step budgets"
            return None
        return Refusal(f"refused: {in_flight_message(project, in_flight)}", actor)

    def _revision_request(
        self, cause: Event, project: Project, revision: ProjectRevision
    ) -> ev.SpecRevisionRequested:
        return cause.derive(
            ev.SpecRevisionRequested,
            actor=ACTOR,
            project_id=project.id,
            revision=revision.number,
            spec=self._spec(project),
            change=revision.change,
            answers=tuple(revision.answers),
        )

    async def _revision_question(
        self, event: ev.ClarificationAsked, project: Project
    ) -> list[Event]:
        """The analyst asks about a change: the revision waits; the project keeps serving."""
        revision = await revisions.open_revision(self.session, project.id)
        if revision is None or revision.status != RevisionStatus.SPECIFYING:
            return []
        revision.status = RevisionStatus.AWAITING_ANSWER
        await self._revision_note(project, event, revision.number, f"question: {event.question}")
        return [self._notify(event, project, ev.NotificationKind.QUESTION, event.question)]

    async def _revision_answer(
        self, event: ev.ClarificationAnswered, project: Project
    ) -> list[Event] | None:
        """An answer to a question about a change; None when no change waits for one."""
        revision = await revisions.open_revision(self.session, project.id)
        if revision is None or revision.status != RevisionStatus.AWAITING_ANSWER:
            return None
        revision.answers = [*revision.answers, event.answer]
        revision.status = RevisionStatus.SPECIFYING
        await self._revision_note(project, event, revision.number, "answer received")
        return [
            self._progress(event, project, f"Thanks! Continuing revision {revision.number}…"),
            self._revision_request(event, project, revision),
        ]

    async def spec_revised(self, event: ev.SpecRevised) -> list[Event]:
        """The revised spec is written: render it (offline) or code it from the current commit."""
        project = await self._lock(event.project_id)
        if project is None:
            return []
        revision = await revisions.open_at(
            self.session, project.id, event.revision, RevisionStatus.SPECIFYING
        )
        if revision is None:
            return []
        # The slug names the repository, the deploy directory and the system user: it stays.
        spec = event.spec.model_copy(update={"slug": self._spec(project).slug})
        revision.spec = spec.model_dump(mode="json")
        revision.summary = event.summary
        await self._revision_note(project, event, revision.number, f"spec: {event.summary}")
        assert project.repo_clone_url and project.code_commit
        next_step: Event
        if self.offline:
            revision.status = RevisionStatus.RENDERING
            next_step = event.derive(
                ev.RepoRevisionRequested,
                actor=ACTOR,
                project_id=project.id,
                revision=revision.number,
                spec=spec,
                clone_url=project.repo_clone_url,
                base_commit=project.code_commit,
                default_branch=project.repo_branch or "main",
            )
        else:
            revision.status = RevisionStatus.BUILDING
            next_step = self._revision_code_request(event, project, revision, project.code_commit)
        return [
            self._progress(
                event, project, f"Revision {revision.number}: {event.summary} Writing the code…"
            ),
            next_step,
        ]

    def _revision_code_request(
        self, cause: Event, project: Project, revision: ProjectRevision, base_commit: str
    ) -> ev.CodeRequested:
        assert project.repo_clone_url and revision.spec is not None
        change = "\n".join([revision.change, *revision.answers])
        return cause.derive(
            ev.CodeRequested,
            actor=ACTOR,
            project_id=project.id,
            spec=ProjectSpec.model_validate(revision.spec),
            clone_url=project.repo_clone_url,
            base_commit=base_commit,
            default_branch=project.repo_branch or "main",
            change=change[:8000],
        )

    async def spec_revision_failed(self, event: ev.SpecRevisionFailed) -> list[Event]:
        """The change cannot be expressed: the revision ends; the project stays as it was."""
        project = await self._lock(event.project_id)
        if project is None:
            return []
        revision = await revisions.open_at(
            self.session, project.id, event.revision, RevisionStatus.SPECIFYING
        )
        if revision is None:
            return []
        return await self._end_revision(
            event,
            project,
            revision,
            RevisionStatus.REFUSED if event.needs_llm else RevisionStatus.FAILED,
            event.reason,
        )

    async def repo_revised(self, event: ev.RepoRevised) -> list[Event]:
        """The revised spec is rendered onto the current commit: the engineer verifies it."""
        project = await self._lock(event.project_id)
        if project is None:
            return []
        revision = await revisions.open_at(
            self.session, project.id, event.revision, RevisionStatus.RENDERING
        )
        if revision is None:
            return []
        revision.status = RevisionStatus.BUILDING
        changed = ", ".join(event.files) or "no files"
        await self._revision_note(
            project, event, revision.number, f"rendered {event.commit[:8]} ({_clip(changed)})"
        )
        return [self._revision_code_request(event, project, revision, event.commit)]

    async def repo_revision_failed(self, event: ev.RepoRevisionFailed) -> list[Event]:
        project = await self._lock(event.project_id)
        if project is None:
            return []
        revision = await revisions.open_at(
            self.session, project.id, event.revision, RevisionStatus.RENDERING
        )
        if revision is None:
            return []
        return await self._end_revision(
            event, project, revision, RevisionStatus.FAILED, f"Repository: {event.reason}"
        )

    async def _revision_code_generated(
        self, event: ev.CodeGenerated, project: Project
    ) -> list[Event]:
        """The revision's code passes its tests: deploy it (the deployer rolls back on failure)."""
        revision = await revisions.open_revision(self.session, project.id)
        if revision is None or revision.status != RevisionStatus.BUILDING:
            return []
        assert revision.spec is not None
        revision.status = RevisionStatus.DEPLOYING
        revision.commit = event.commit
        await self._revision_note(
            project,
            event,
            revision.number,
            f"code {event.commit[:8]}: {event.tests_passed} tests passed ({event.mode})",
        )
        if project.state == S.FAILED:
            # Nothing serves to protect: the revision becomes the project's build and the
            # ordinary deploy outcome moves the project (to active, or failed again).
            project.spec = revision.spec
            project.code_commit = event.commit
            self._move(project, S.DEPLOYING)
            project.error = None
            deploy = self._deploy_request(event, project)
        else:
            assert project.repo_clone_url and project.server_name and project.host
            assert project.port is not None
            deploy = event.derive(
                ev.DeployRequested,
                actor=ACTOR,
                project_id=project.id,
                spec=ProjectSpec.model_validate(revision.spec),
                clone_url=project.repo_clone_url,
                commit=event.commit,
                server_name=project.server_name,
                host=project.host,
                port=project.port,
            )
        return [
            self._progress(
                event,
                project,
                f"Revision {revision.number}: {event.tests_passed} tests pass. Deploying…",
            ),
            deploy,
        ]

    async def _revision_code_failed(self, event: ev.CodeFailed, project: Project) -> list[Event]:
        revision = await revisions.open_revision(self.session, project.id)
        if revision is None or revision.status not in (
            RevisionStatus.BUILDING,
            RevisionStatus.RENDERING,
        ):
            return []
        return await self._end_revision(
            event, project, revision, RevisionStatus.FAILED, f"Code failed: {event.reason}"
        )

    async def _revision_released(self, event: ev.DeploySucceeded, project: Project) -> list[Event]:
        """The revision's release is live: its spec and commit become the project's."""
        revision = await revisions.open_revision(self.session, project.id)
        if (
            revision is None
            or revision.status != RevisionStatus.DEPLOYING
            or revision.commit != event.commit
        ):
            return []
        assert revision.spec is not None
        revision.status = RevisionStatus.LIVE
        project.spec = revision.spec
        project.code_commit = event.commit
        project.name = str(revision.spec.get("name") or project.name)
        await self._revision_note(
            project, event, revision.number, f"live at {event.url}: {revision.summary}"
        )
        return [
            self._notify(
                event,
                project,
                ev.NotificationKind.DONE,
                f"Revision {revision.number} of {project.name} is live: {event.url}\n"
                f"{revision.summary}",
                index=2,
            )
        ]

    async def _revision_deploy_failed(
        self, event: ev.DeployFailed, project: Project
    ) -> list[Event]:
        revision = await revisions.open_revision(self.session, project.id)
        if (
            revision is None
            or revision.status != RevisionStatus.DEPLOYING
            or revision.commit != event.commit
        ):
            return []
        revision.status = RevisionStatus.FAILED
        revision.reason = event.reason
        served = " The previous release serves again." if event.rolled_back else ""
        await self._revision_note(
            project, event, revision.number, f"deploy failed: {_clip(event.reason)}.{served}"
        )
        return []

    async def _end_revision(
        self,
        event: Event,
        project: Project,
        revision: ProjectRevision,
        status: RevisionStatus,
        reason: str,
    ) -> list[Event]:
        """Close a revision that will not ship, and tell the user the project is unchanged."""
        revision.status = status
        revision.reason = reason
        await self._revision_note(project, event, revision.number, f"{status}: {_clip(reason)}")
        text = (
            f"Revision {revision.number} of {project.name} was not applied: {reason} "
            f"The project is unchanged.{self._still_serving(project)}"
        )
        return [self._notify(event, project, ev.NotificationKind.FAILURE, text[:4000])]

    @staticmethod
    def _still_serving(project: Project) -> str:
        if project.state == S.ACTIVE and project.url:
            return f" The current release keeps serving at {project.url}."
        return ""

    async def _revision_note(
        self, project: Project, cause: Event, number: int, summary: str
    ) -> None:
        """One timeline row per revision step, its id derived from the cause and the step, so
        it sits beside the cause's own row and a redelivery writes nothing twice."""
        note = f"revision {number} {summary}"
        await self.session.execute(
            pg_insert(ProjectEvent)
            .values(
                project_id=project.id,
                event_id=uuid.uuid5(cause.event_id, note),
                event_type=cause.TYPE,
                actor=cause.actor,
                summary=note,
                state=project.state,
                occurred_at=cause.occurred_at,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
        )


def _clip(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
