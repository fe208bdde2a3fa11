"""The v1 events of the pipeline: intents from producers, then project, deploy, notify, ops.

Commands (`*.requested`) are emitted by the coordinator, the only part that knows the
lifecycle; outcome events are emitted by the step that did the work. Every payload field has
a description: this module is the event catalogue (see docs/asyncapi.yaml).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.envelope import Event
from contracts.fields import (
    MAX_ITEMS,
    MAX_NAME,
    MAX_REPORT,
    MAX_TEXT,
    CloneUrl,
    CommitSha,
    Slug,
    UserId,
    VarName,
)
from contracts.spec import ProjectSpec

# ---------------------------------------------------------------- intents (producers)


class ProjectRequested(Event):
    """A person asked for a new service (chat, HTTP API or CLI)."""

    TYPE: ClassVar[str] = "intents.project.requested"

    project_id: uuid.UUID = Field(description="Id the producer chose, so it can answer at once")
    description: str = Field(description="The user's own words", min_length=1, max_length=8000)
    user_id: UserId = Field(
        description="Stable user id: telegram:<id>, api:<token name> or cli:<login>"
    )
    chat_id: int | None = Field(None, description="Telegram chat to report to, if any")
    source: Literal["telegram", "api", "cli", "console"] = Field(description="Which producer")


class ClarificationAnswered(Event):
    """The user answered the analyst's question."""

    TYPE: ClassVar[str] = "intents.project.answered"

    project_id: uuid.UUID = Field(description="The project the answer belongs to")
    answer: str = Field(description="The user's answer", min_length=1, max_length=8000)
    user_id: UserId = Field(
        description="Who answered; the coordinator accepts the owner or an admin"
    )


class ProjectArchiveRequested(Event):
    """The user or an operator retired a project; its server resources are released."""

    TYPE: ClassVar[str] = "intents.project.archive"
    SCHEMA_VERSION: ClassVar[int] = 2

    project_id: uuid.UUID = Field(description="The project to archive")
    reason: str = Field("", description="Why, for the timeline", max_length=MAX_TEXT)
    user_id: UserId | None = Field(
        None,
        description="Who asked (v2); the coordinator accepts the owner or an admin and refuses "
        "a request without one",
    )


# ---------------------------------------------------------------- analyst


class SpecRequested(Event):
    """Coordinator → analyst: write (or continue writing) the spec."""

    TYPE: ClassVar[str] = "project.spec.requested"

    project_id: uuid.UUID = Field(description="The project")
    description: str = Field(description="The original description", max_length=MAX_TEXT)
    answers: tuple[str, ...] = Field(
        (), description="Answers to earlier questions, in order", max_length=MAX_ITEMS
    )


class ClarificationAsked(Event):
    """Analyst → user: the description is too thin; the flow waits for an answer."""

    TYPE: ClassVar[str] = "project.clarification.asked"

    project_id: uuid.UUID = Field(description="The project")
    question: str = Field(description="The question, in the user's language", max_length=MAX_TEXT)
    missing: tuple[str, ...] = Field(
        (), description="Which parts of the spec are unknown", max_length=MAX_ITEMS
    )
    offline: bool = Field(description="True when asked by the deterministic offline analyst")


class SpecReady(Event):
    """Analyst: the spec is complete."""

    TYPE: ClassVar[str] = "project.spec.ready"
    #: 2: the spec gained executable acceptance checks (`ProjectSpec.checks`).
    #: 3: the spec gained schedules, integrations and persistence.
    SCHEMA_VERSION: ClassVar[int] = 3

    project_id: uuid.UUID = Field(description="The project")
    spec: ProjectSpec = Field(description="The specification")
    offline: bool = Field(description="True when written by the deterministic offline analyst")


class SpecFailed(Event):
    """Analyst could not write a spec (provider error after retries, refusal)."""

    TYPE: ClassVar[str] = "project.spec.failed"

    project_id: uuid.UUID = Field(description="The project")
    reason: str = Field(description="What went wrong, for the user", max_length=MAX_REPORT)


# ---------------------------------------------------------------- provisioner


class ProvisionRequested(Event):
    """Coordinator → provisioner: pick a server and allocate a port."""

    TYPE: ClassVar[str] = "project.provision.requested"

    project_id: uuid.UUID = Field(description="The project")
    slug: Slug = Field(description="The project's slug")
    labels: tuple[str, ...] = Field(
        (), description="Server labels the project needs", max_length=MAX_ITEMS
    )


class ResourcesAllocated(Event):
    """Provisioner: a server and a port are reserved for the project."""

    TYPE: ClassVar[str] = "project.resources.allocated"

    project_id: uuid.UUID = Field(description="The project")
    server_name: str = Field(description="Inventory name of the server", max_length=MAX_NAME)
    host: str = Field(
        description="Address the service will listen on and be reached at", max_length=255
    )
    port: int = Field(description="The allocated port, unique on that server", ge=1, le=65535)


class ProvisioningFailed(Event):
    """Provisioner: no server can take the project."""

    TYPE: ClassVar[str] = "project.resources.failed"

    project_id: uuid.UUID = Field(description="The project")
    reason: str = Field(
        description="Why, with what an operator can do about it", max_length=MAX_REPORT
    )


class ResourcesReleased(Event):
    """Provisioner: an archived project's port is free again."""

    TYPE: ClassVar[str] = "project.resources.released"

    project_id: uuid.UUID = Field(description="The project")
    server_name: str = Field(description="The server it was on")
    port: int = Field(description="The port released")


# ---------------------------------------------------------------- repo


class RepoRequested(Event):
    """Coordinator → repo: create the repository and scaffold it."""

    TYPE: ClassVar[str] = "project.repo.requested"
    #: 2: the spec gained executable acceptance checks (`ProjectSpec.checks`).
    #: 3: the spec gained schedules, integrations and persistence.
    SCHEMA_VERSION: ClassVar[int] = 3

    project_id: uuid.UUID = Field(description="The project")
    spec: ProjectSpec = Field(description="The specification to scaffold")


class RepoCreated(Event):
    """Repo: the repository exists with the scaffold on its default branch."""

    TYPE: ClassVar[str] = "project.repo.created"

    project_id: uuid.UUID = Field(description="The project")
    repo_name: str = Field(
        description="Repository name (owner/name on GitHub)", max_length=MAX_NAME
    )
    clone_url: CloneUrl = Field(description="URL to clone and push (no credentials in it)")
    web_url: str = Field("", description="Where a person can browse it", max_length=2000)
    default_branch: str = Field(
        "main", description="The branch holding the scaffold", max_length=MAX_NAME
    )
    commit: CommitSha = Field(description="The scaffold commit (full 40-hex id)")


class RepoFailed(Event):
    """Repo: the git host refused or failed."""

    TYPE: ClassVar[str] = "project.repo.failed"

    project_id: uuid.UUID = Field(description="The project")
    reason: str = Field(description="What the git host said", max_length=MAX_REPORT)


# ---------------------------------------------------------------- engineer


class CodeRequested(Event):
    """Coordinator → engineer: make the code pass its tests and push it."""

    TYPE: ClassVar[str] = "project.code.requested"
    #: 2: the spec gained executable acceptance checks (`ProjectSpec.checks`).
    #: 3: `verify_only`, for an adopted repository.
    #: 4: the spec gained schedules, integrations and persistence.
    SCHEMA_VERSION: ClassVar[int] = 4

    project_id: uuid.UUID = Field(description="The project")
    spec: ProjectSpec = Field(description="The specification")
    clone_url: CloneUrl = Field(description="Repository to work on")
    base_commit: CommitSha = Field(description="Commit to start from (full 40-hex id)")
    default_branch: str = Field("main", description="Branch to push to", max_length=MAX_NAME)
    change: str = Field(
        "",
        description="For a revision of a live project (v2): the change the user asked for "
        "(the base commit is then the project's current code, not the scaffold)",
        max_length=8000,
    )
    verify_only: bool = Field(
        False,
        description="For an adopted repository (v3): run its own tests in the sandbox and "
        "report its commit; write no code",
    )


class CodeGenerated(Event):
    """Engineer: code is pushed and its tests pass."""

    TYPE: ClassVar[str] = "project.code.generated"

    project_id: uuid.UUID = Field(description="The project")
    commit: CommitSha = Field(description="The pushed commit (full 40-hex id)")
    mode: Literal["offline", "llm", "container"] = Field(description="Which coding agent ran")
    iterations: int = Field(0, description="Coder loop iterations (0 offline)")
    tests_passed: int = Field(description="Tests that passed")
    tests_failed: int = Field(0, description="Tests that failed (0 when generated)")
    summary: str = Field("", description="What changed, for the user", max_length=MAX_TEXT)


class CodeFailed(Event):
    """Engineer: tests did not pass within the iteration bound, or the agent failed."""

    TYPE: ClassVar[str] = "project.code.failed"

    project_id: uuid.UUID = Field(description="The project")
    reason: str = Field(description="Why, with the failing tests' summary", max_length=MAX_REPORT)
    iterations: int = Field(0, description="Iterations used")


# ---------------------------------------------------------------- lifecycle


class ProjectArchived(Event):
    """Coordinator: the project is archived; resources are to be released."""

    TYPE: ClassVar[str] = "project.archived"

    project_id: uuid.UUID = Field(description="The project")


class SecretStored(Event):
    """A secret value was written to Vault; only its name and path travel."""

    TYPE: ClassVar[str] = "project.secret.stored"
    SCHEMA_VERSION: ClassVar[int] = 2

    project_id: uuid.UUID = Field(description="The project the secret belongs to")
    name: VarName = Field(description="Variable name, e.g. TELEGRAM_BOT_TOKEN")
    vault_path: str = Field(description="KV v2 path under the secrets mount", max_length=1000)
    user_id: UserId | None = Field(
        None,
        description="Who stored it (v2); the coordinator accepts the owner or an admin and "
        "refuses a notice without one",
    )


# ---------------------------------------------------------------- deploy


class DeployMode(StrEnum):
    PROCESS = "process"
    COMPOSE = "compose"


class DeployRequested(Event):
    """Coordinator → deployer: code and resources are both ready."""

    TYPE: ClassVar[str] = "deploy.requested"
    #: 2: the spec gained executable acceptance checks (`ProjectSpec.checks`).
    #: 3: the spec gained schedules, integrations and persistence.
    SCHEMA_VERSION: ClassVar[int] = 3

    project_id: uuid.UUID = Field(description="The project")
    spec: ProjectSpec = Field(description="The specification (variables for .env)")
    clone_url: CloneUrl = Field(description="Repository to deploy from")
    commit: CommitSha = Field(description="Commit to deploy (full 40-hex id)")
    server_name: str = Field(description="Inventory server", max_length=MAX_NAME)
    host: str = Field(description="Server address", max_length=255)
    port: int = Field(description="Port the service listens on", ge=1, le=65535)
    mode: DeployMode = Field(DeployMode.PROCESS, description="process (venv) or compose")


class DeploySucceeded(Event):
    """Deployer: the release answers its health check."""

    TYPE: ClassVar[str] = "deploy.succeeded"

    project_id: uuid.UUID = Field(description="The project")
    commit: CommitSha = Field(description="Deployed commit (full 40-hex id)")
    release: str = Field(description="Release identifier on the server", max_length=MAX_NAME)
    url: str = Field(description="Where the service answers", max_length=2000)
    noop: bool = Field(False, description="True when this commit was already live")


class DeployFailed(Event):
    """Deployer: the release did not come up."""

    TYPE: ClassVar[str] = "deploy.failed"

    project_id: uuid.UUID = Field(description="The project")
    commit: CommitSha = Field(description="Commit that failed (full 40-hex id)")
    reason: str = Field(
        description="What failed (health check, playbook task)", max_length=MAX_REPORT
    )
    rolled_back: bool = Field(description="True when the previous release serves again")


class DeployRolledBack(Event):
    """Deployer: the previous release was restored after a failed one."""

    TYPE: ClassVar[str] = "deploy.rolled_back"

    project_id: uuid.UUID = Field(description="The project")
    failed_release: str = Field(description="The release that failed", max_length=MAX_NAME)
    restored_release: str = Field(description="The release serving again", max_length=MAX_NAME)


class DeployStopRequested(Event):
    """Coordinator → deployer: an archived project's service must stop before its port is freed."""

    TYPE: ClassVar[str] = "deploy.stop.requested"

    project_id: uuid.UUID = Field(description="The archived project")
    slug: str = Field(
        description="The project's slug: its directory and system user on the server",
        pattern=r"^[a-z][a-z0-9-]{1,48}[a-z0-9]$",
    )
    server_name: str = Field(description="Inventory server it runs on")
    host: str = Field(description="Server address")
    port: int = Field(description="Port it listens on, released only after the stop")


class DeployStopped(Event):
    """Deployer: the project's processes, releases and system user are gone; its port is free."""

    TYPE: ClassVar[str] = "deploy.stopped"

    project_id: uuid.UUID = Field(description="The project")
    server_name: str = Field(description="The server it ran on")
    port: int = Field(description="The port nothing listens on any more")
    detail: str = Field("", description="What was done, or why there was nothing to stop")


# ---------------------------------------------------------------- notify


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class StepStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: str = Field(description="Step name: spec, resources, repo, code, deploy")
    state: StepState = Field(description="Where the step is")


class NotificationKind(StrEnum):
    PROGRESS = "progress"
    QUESTION = "question"
    FAILURE = "failure"
    DONE = "done"
    INFO = "info"


class NotificationRequested(Event):
    """Anything → notifier: tell the user. Progress edits one message; others are new ones."""

    TYPE: ClassVar[str] = "notify.requested"

    project_id: uuid.UUID | None = Field(None, description="The project, if any")
    user_id: UserId = Field(description="Recipient user id")
    chat_id: int | None = Field(None, description="Telegram chat; None prints to the console chat")
    kind: NotificationKind = Field(description="progress edits in place; others are new messages")
    text: str = Field(description="The message text (no secrets, ever)", max_length=MAX_REPORT)
    steps: tuple[StepStatus, ...] = Field(
        (), description="Checklist shown in progress messages", max_length=20
    )
    offline: bool = Field(False, description="True when the pipeline runs without an LLM")


# ---------------------------------------------------------------- ops


class SchedulerTick(Event):
    """Scheduler: one tick per job and period, de-duplicated across scheduler replicas."""

    TYPE: ClassVar[str] = "ops.tick"

    job: str = Field(description="Job name, e.g. timeouts, health, repo_sync", max_length=MAX_NAME)
    period: str = Field(
        description="Period key, e.g. 2026-11-24T22:40 for a minutely job", max_length=MAX_NAME
    )

    def subject_name(self) -> str:
        return f"{self.TYPE}.{self.job}"


class IncidentOpened(Event):
    """Ops: something an operator must look at."""

    TYPE: ClassVar[str] = "ops.incident.opened"

    incident_id: uuid.UUID = Field(description="Incident id")
    kind: str = Field(
        description="health_check_failed, step_timeout, dead_letter, ...", max_length=MAX_NAME
    )
    key: str = Field(description="Natural key; one open incident per key", max_length=MAX_NAME)
    summary: str = Field(description="What an operator sees first", max_length=MAX_TEXT)
    project_id: uuid.UUID | None = Field(None, description="Project concerned, if any")


class IncidentResolved(Event):
    """Ops: the incident's condition is gone."""

    TYPE: ClassVar[str] = "ops.incident.resolved"

    incident_id: uuid.UUID = Field(description="Incident id")
    key: str = Field(description="Natural key", max_length=MAX_NAME)


# ---------------------------------------------------------------- operations on a project


class ProjectRedeployRequested(Event):
    """A person asked to deploy a live project again (its current commit, or one they name)."""

    TYPE: ClassVar[str] = "intents.project.redeploy"

    project_id: uuid.UUID = Field(description="The project to redeploy")
    user_id: UserId = Field(description="Who asked; the coordinator accepts the owner or an admin")
    commit: CommitSha | None = Field(
        None,
        description="Commit of the project's repository to deploy; none deploys the project's "
        "current commit again (a no-op when it already serves)",
    )


class ProjectRestartRequested(Event):
    """A person asked to restart the running release of a live project, without a new deploy."""

    TYPE: ClassVar[str] = "intents.project.restart"

    project_id: uuid.UUID = Field(description="The project to restart")
    user_id: UserId = Field(description="Who asked; the coordinator accepts the owner or an admin")


class ProjectRollbackRequested(Event):
    """A person asked to serve a live project's previous release again."""

    TYPE: ClassVar[str] = "intents.project.rollback"

    project_id: uuid.UUID = Field(description="The project to roll back")
    user_id: UserId = Field(description="Who asked; the coordinator accepts the owner or an admin")


class ProjectRetryRequested(Event):
    """A person asked a failed project to resume from the step that failed."""

    TYPE: ClassVar[str] = "intents.project.retry"

    project_id: uuid.UUID = Field(description="The failed project")
    user_id: UserId = Field(description="Who asked; the coordinator accepts the owner or an admin")


class DeployRestartRequested(Event):
    """Coordinator → deployer: restart the release that serves now; nothing is checked out."""

    TYPE: ClassVar[str] = "deploy.restart.requested"

    project_id: uuid.UUID = Field(description="The live project")
    slug: str = Field(
        description="The project's slug: its directory and system user on the server",
        pattern=r"^[a-z][a-z0-9-]{1,48}[a-z0-9]$",
    )
    commit: CommitSha = Field(description="The commit that serves now (full 40-hex id)")
    server_name: str = Field(description="Inventory server it runs on", max_length=MAX_NAME)
    host: str = Field(description="Server address", max_length=255)
    port: int = Field(description="Port it listens on", ge=1, le=65535)


class DeployRestarted(Event):
    """Deployer: the serving release was restarted and answers its health check again."""

    TYPE: ClassVar[str] = "deploy.restarted"

    project_id: uuid.UUID = Field(description="The project")
    commit: CommitSha = Field(description="The commit that serves (full 40-hex id)")
    release: str = Field(description="The release restarted", max_length=MAX_NAME)
    url: str = Field(description="Where the service answers", max_length=2000)
# ---------------------------------------------------------------- change requests (revisions)


class ChangeRequested(Event):
    """The user asked for a change to a live project ("add an endpoint with totals per month")."""

    TYPE: ClassVar[str] = "intents.project.change"

    project_id: uuid.UUID = Field(description="The project to change")
    change: str = Field(
        description="The change, in the user's own words", min_length=1, max_length=8000
    )
    user_id: UserId = Field(description="Who asked; the coordinator accepts the owner or an admin")
    source: Literal["telegram", "api", "cli", "console"] = Field(description="Which producer")


class SpecRevisionRequested(Event):
    """Coordinator → analyst: revise the current spec of a live project for one change."""

    TYPE: ClassVar[str] = "project.spec.revision.requested"
    #: 2: the spec gained schedules, integrations and persistence.
    SCHEMA_VERSION: ClassVar[int] = 2

    project_id: uuid.UUID = Field(description="The project")
    revision: int = Field(description="Number of the revision being written (the first is 1)", ge=2)
    spec: ProjectSpec = Field(description="The project's current spec, to be revised")
    change: str = Field(description="The change the user asked for", max_length=8000)
    answers: tuple[str, ...] = Field(
        (),
        description="Answers to the analyst's questions about this change, in order",
        max_length=MAX_ITEMS,
    )


class SpecRevised(Event):
    """Analyst: the spec revised for a change, with a short summary of what differs."""

    TYPE: ClassVar[str] = "project.spec.revised"
    #: 2: the spec gained schedules, integrations and persistence.
    SCHEMA_VERSION: ClassVar[int] = 2

    project_id: uuid.UUID = Field(description="The project")
    revision: int = Field(description="The revision's number", ge=2)
    spec: ProjectSpec = Field(description="The full revised spec")
    summary: str = Field(
        description="What changed against the previous spec, for the timeline", max_length=MAX_TEXT
    )
    offline: bool = Field(description="True when revised by the deterministic offline analyst")


class SpecRevisionFailed(Event):
    """Analyst: the change cannot be turned into a revision; the project stays as it was."""

    TYPE: ClassVar[str] = "project.spec.revision.failed"

    project_id: uuid.UUID = Field(description="The project")
    revision: int = Field(description="The revision's number", ge=2)
    reason: str = Field(description="Why, and what the user can do", max_length=MAX_REPORT)
    needs_llm: bool = Field(
        False, description="True when offline rules cannot express the change and an LLM could"
    )


class RepoRevisionRequested(Event):
    """Coordinator → repo: render the revised spec onto the project's current commit (offline).

    The repo step owns the templates; offline, a project's code is its rendered scaffold, so a
    revision is the revised spec rendered over the current tree, committed on top of it.
    """

    TYPE: ClassVar[str] = "project.repo.revision.requested"
    #: 2: the spec gained schedules, integrations and persistence.
    SCHEMA_VERSION: ClassVar[int] = 2

    project_id: uuid.UUID = Field(description="The project")
    revision: int = Field(description="The revision's number", ge=2)
    spec: ProjectSpec = Field(description="The revised spec to render")
    clone_url: CloneUrl = Field(description="The project's repository")
    base_commit: CommitSha = Field(description="The project's current commit (full 40-hex id)")
    default_branch: str = Field("main", description="Branch to push to", max_length=MAX_NAME)


class RepoRevised(Event):
    """Repo: the revised spec is rendered and pushed on top of the project's current commit."""

    TYPE: ClassVar[str] = "project.repo.revised"

    project_id: uuid.UUID = Field(description="The project")
    revision: int = Field(description="The revision's number", ge=2)
    commit: CommitSha = Field(description="The rendered commit (full 40-hex id)")
    files: tuple[str, ...] = Field(
        (), description="Paths the revision added or changed", max_length=MAX_ITEMS
    )


class RepoRevisionFailed(Event):
    """Repo: the revision could not be rendered onto the current commit; nothing was pushed."""

    TYPE: ClassVar[str] = "project.repo.revision.failed"

    project_id: uuid.UUID = Field(description="The project")
    revision: int = Field(description="The revision's number", ge=2)
    reason: str = Field(description="What the git host said", max_length=MAX_REPORT)


# ---------------------------------------------------------------- adopting a repository


class ProjectAdoptRequested(Event):
    """A person asked the system to run an existing repository (chat, HTTP API or CLI).

    The repository must be on the configured git host (`infra/repo_urls.py`,
    `check_source_url`); its files are read, never run, until the engineer's sandbox tests them.
    """

    TYPE: ClassVar[str] = "intents.project.adopt"

    project_id: uuid.UUID = Field(description="Id the producer chose, so it can answer at once")
    repository_url: CloneUrl = Field(
        description="The repository to adopt: a git URL on the configured git host, no "
        "credentials in it"
    )
    user_id: UserId = Field(
        description="Stable user id: telegram:<id>, api:<token name> or cli:<login>; the "
        "adopted project is theirs"
    )
    chat_id: int | None = Field(None, description="Telegram chat to report to, if any")
    source: Literal["telegram", "api", "cli", "console"] = Field(description="Which producer")


class RepoAdoptRequested(Event):
    """Coordinator → repo: inspect a repository and import it as the project's repository."""

    TYPE: ClassVar[str] = "project.repo.adopt.requested"

    project_id: uuid.UUID = Field(description="The project")
    repository_url: CloneUrl = Field(description="The repository to inspect and import")
    slug: Slug = Field(
        description="The project's slug: names the imported repository and the deploy directory"
    )


class RepoAdopted(Event):
    """Repo: the repository can run; it is imported and a spec was written from its files.

    `commit` is the source's head, or one commit on top of it that adds the `deploy.json`
    the inspector derived (a recognisable start without one).
    """

    TYPE: ClassVar[str] = "project.repo.adopted"
    #: 2: the spec gained schedules, integrations and persistence.
    SCHEMA_VERSION: ClassVar[int] = 2

    project_id: uuid.UUID = Field(description="The project")
    spec: ProjectSpec = Field(description="The spec written from what the inspection found")
    repo_name: str = Field(
        description="Repository name (owner/name on GitHub)", max_length=MAX_NAME
    )
    clone_url: CloneUrl = Field(description="The project's repository (no credentials in it)")
    web_url: str = Field("", description="Where a person can browse it", max_length=2000)
    default_branch: str = Field("main", description="The imported branch", max_length=MAX_NAME)
    commit: CommitSha = Field(description="The commit to test and deploy (full 40-hex id)")
    findings: tuple[str, ...] = Field(
        (),
        description="What the inspection found and assumed, one line each, for the timeline",
        max_length=MAX_ITEMS,
    )


#: Every event type, by its type name; the bus decodes with it.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        ProjectRequested,
        ClarificationAnswered,
        ProjectArchiveRequested,
        SpecRequested,
        ClarificationAsked,
        SpecReady,
        SpecFailed,
        ProvisionRequested,
        ResourcesAllocated,
        ProvisioningFailed,
        ResourcesReleased,
        RepoRequested,
        RepoCreated,
        RepoFailed,
        CodeRequested,
        CodeGenerated,
        CodeFailed,
        ProjectArchived,
        SecretStored,
        DeployRequested,
        DeploySucceeded,
        DeployFailed,
        DeployRolledBack,
        DeployStopRequested,
        DeployStopped,
        NotificationRequested,
        SchedulerTick,
        IncidentOpened,
        IncidentResolved,
        ProjectRedeployRequested,
        ProjectRestartRequested,
        ProjectRollbackRequested,
        ProjectRetryRequested,
        DeployRestartRequested,
        DeployRestarted,
        ChangeRequested,
        SpecRevisionRequested,
        SpecRevised,
        SpecRevisionFailed,
        RepoRevisionRequested,
        RepoRevised,
        RepoRevisionFailed,
        ProjectAdoptRequested,
        RepoAdoptRequested,
        RepoAdopted,
    )
}


class DeployAwaitingSecrets(Event):
    """Deployer: the release needs secrets Vault does not hold; the running release is untouched.

    Only the names travel. The project waits (state `awaiting_secrets`) until the last of them
    is stored (`project.secret.stored`), then the coordinator asks for the same deploy again.
    """

    TYPE: ClassVar[str] = "deploy.awaiting_secrets"

    project_id: uuid.UUID = Field(description="The project")
    commit: CommitSha = Field(description="Commit whose deploy waits (full 40-hex id)")
    missing: tuple[VarName, ...] = Field(
        description="Names of the required secrets Vault does not hold (never values)",
        min_length=1,
        max_length=MAX_ITEMS,
    )
    checked_at: datetime = Field(
        description="When the deployer read Vault: a secret stored after this may already "
        "fill a gap this event names"
    )


EVENT_TYPES[DeployAwaitingSecrets.TYPE] = DeployAwaitingSecrets
