"""Streams, subjects and durable consumers: every name the bus uses, declared in one place.

`infra.bus.topology` applies these declarations to the server on start (create or update), so
changing a value here changes it on the server at the next start. Durable consumers are
shared by all replicas of their process: that is how work is split without locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts import events as ev

# ---------------------------------------------------------------- streams


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_seconds: float = 14 * 24 * 3600


INTENTS = StreamSpec("INTENTS", ("intents.>",), "What producers ask for")
PROJECT = StreamSpec("PROJECT", ("project.>",), "Project commands and step outcomes")
DEPLOY = StreamSpec("DEPLOY", ("deploy.>",), "Deploy commands and outcomes")
NOTIFY = StreamSpec("NOTIFY", ("notify.>",), "Messages to users", max_age_seconds=3 * 24 * 3600)
OPS = StreamSpec("OPS", ("ops.>",), "Scheduler ticks and incidents", max_age_seconds=24 * 3600)
DLQ = StreamSpec(
    "DLQ", ("dlq.>",), "Dead letters: original bytes plus error headers", 30 * 24 * 3600
)

STREAMS: tuple[StreamSpec, ...] = (INTENTS, PROJECT, DEPLOY, NOTIFY, OPS, DLQ)

DLQ_SUBJECT_PREFIX = "dlq"


def dlq_subject(durable: str) -> str:
    """Dead letters of one durable go to their own subject, so they can be listed per consumer."""
    return f"{DLQ_SUBJECT_PREFIX}.{durable}"


# Headers a dead letter carries next to the original message's own headers.
H_DLQ_ERROR = "Orch-Dlq-Error"
H_DLQ_CONSUMER = "Orch-Dlq-Consumer"
H_DLQ_SUBJECT = "Orch-Dlq-Original-Subject"
H_DLQ_STREAM = "Orch-Dlq-Original-Stream"
H_DLQ_STREAM_SEQ = "Orch-Dlq-Original-Seq"
H_DLQ_DELIVERIES = "Orch-Dlq-Deliveries"
H_DLQ_FAILED_AT = "Orch-Dlq-Failed-At"
H_EVENT_TYPE = "Orch-Event-Type"
H_CORRELATION_ID = "Orch-Correlation-Id"
H_MSG_ID = "Nats-Msg-Id"


def tick_subject(job: str) -> str:
    return f"{ev.SchedulerTick.TYPE}.{job}"


# ---------------------------------------------------------------- durable consumers


@dataclass(frozen=True)
class ConsumerSpec:
    """One durable pull consumer. `process` is the consumer package that runs it.

    `batch_size` is how many waiting messages are handled in one transaction. Keep it 1 for a
    step with effects outside the database (a chat message, a push, a deploy): if one handler
    of a batch fails, the batch is handled again message by message, repeating such effects.
    `parallel` is how many pull loops each process runs on the durable: slow steps (a deploy,
    a test run) of different projects then overlap instead of queueing behind each other.
    """

    durable: str
    process: str
    stream: StreamSpec
    subjects: tuple[str, ...]
    description: str
    ack_wait_seconds: float = 30.0
    max_deliver: int = 6
    max_ack_pending: int = 1000
    backoff_seconds: tuple[float, ...] = field(default=())
    batch_size: int = 1
    parallel: int = 1

    def __post_init__(self) -> None:
        if self.parallel > 1 and self.batch_size > 1:
            raise ValueError(
                f"{self.durable}: parallel pull loops fetch one message at a time; "
                "use batch_size=1 with parallel > 1"
            )


COORDINATOR_INTENTS = ConsumerSpec(
    "coordinator-intents",
    "coordinator",
    INTENTS,
    (
        ev.ProjectRequested.TYPE,
        ev.ClarificationAnswered.TYPE,
        ev.ProjectArchiveRequested.TYPE,
        ev.ProjectRedeployRequested.TYPE,
        ev.ProjectRestartRequested.TYPE,
        ev.ProjectRollbackRequested.TYPE,
        ev.ProjectRetryRequested.TYPE,
        ev.ChangeRequested.TYPE,
        ev.ProjectAdoptRequested.TYPE,
    ),
    "Creates projects (described or adopted) and routes answers, archive, change, redeploy, "
    "restart, rollback and retry requests",
    batch_size=100,
)
COORDINATOR_OUTCOMES = ConsumerSpec(
    "coordinator-outcomes",
    "coordinator",
    PROJECT,
    (
        ev.ClarificationAsked.TYPE,
        ev.SpecReady.TYPE,
        ev.SpecFailed.TYPE,
        ev.ResourcesAllocated.TYPE,
        ev.ProvisioningFailed.TYPE,
        ev.RepoCreated.TYPE,
        ev.RepoFailed.TYPE,
        ev.CodeGenerated.TYPE,
        ev.CodeFailed.TYPE,
        ev.SecretStored.TYPE,
        ev.SpecRevised.TYPE,
        ev.SpecRevisionFailed.TYPE,
        ev.RepoRevised.TYPE,
        ev.RepoRevisionFailed.TYPE,
        ev.RepoAdopted.TYPE,
    ),
    "Moves the project state machine on step outcomes; records stored secrets' names",
    batch_size=100,
)
COORDINATOR_DEPLOYS = ConsumerSpec(
    "coordinator-deploys",
    "coordinator",
    DEPLOY,
    (
        ev.DeploySucceeded.TYPE,
        ev.DeployFailed.TYPE,
        ev.DeployRolledBack.TYPE,
        ev.DeployStopped.TYPE,
        ev.DeployAwaitingSecrets.TYPE,
        ev.DeployRestarted.TYPE,
    ),
    "Moves the project state machine on deploy outcomes; frees an archived project's port",
    batch_size=100,
)
COORDINATOR_TICKS = ConsumerSpec(
    "coordinator-ticks",
    "coordinator",
    OPS,
    (tick_subject("timeouts"),),
    "Per-step timeouts and bounded retries",
)
ANALYST = ConsumerSpec(
    "analyst",
    "analyst",
    PROJECT,
    (ev.SpecRequested.TYPE, ev.SpecRevisionRequested.TYPE),
    "Writes or revises the spec, or asks a question",
    ack_wait_seconds=120.0,
    parallel=4,
)
PROVISIONER = ConsumerSpec(
    "provisioner",
    "provisioner",
    PROJECT,
    (ev.ProvisionRequested.TYPE, ev.ProjectArchived.TYPE),
    "Allocates and releases servers and ports",
    batch_size=100,
)
REPO = ConsumerSpec(
    "repo",
    "repo",
    PROJECT,
    (ev.RepoRequested.TYPE, ev.RepoRevisionRequested.TYPE, ev.RepoAdoptRequested.TYPE),
    "Creates and scaffolds repositories; renders an offline revision onto the current commit; "
    "inspects and imports an adopted repository",
    ack_wait_seconds=120.0,
    parallel=4,
)
REPO_RECONCILE = ConsumerSpec(
    "repo-reconcile",
    "repo",
    OPS,
    (tick_subject("reconcile"),),
    "Finds repositories, releases and ports no project owns, and projects whose repository "
    "is gone; frees ports nothing listens on; opens and resolves incidents",
    ack_wait_seconds=120.0,
)
ENGINEER = ConsumerSpec(
    "engineer",
    "engineer",
    PROJECT,
    (ev.CodeRequested.TYPE,),
    "Generates code until its tests pass",
    ack_wait_seconds=300.0,
    max_deliver=4,
    parallel=2,
)
DEPLOYER = ConsumerSpec(
    "deployer",
    "deployer",
    DEPLOY,
    (ev.DeployRequested.TYPE, ev.DeployStopRequested.TYPE, ev.DeployRestartRequested.TYPE),
    "Ships a commit with Ansible and health-checks it; restarts a live release; stops an "
    "archived project's service",
    ack_wait_seconds=300.0,
    max_deliver=4,
    parallel=4,
)
NOTIFIER = ConsumerSpec(
    "notifier",
    "notifier",
    NOTIFY,
    (ev.NotificationRequested.TYPE,),
    "Sends and edits chat messages",
    parallel=4,
)
OPS_TICKS = ConsumerSpec(
    "ops",
    "ops",
    OPS,
    (tick_subject("health"),),
    "Health checks of deployed services; opens and resolves incidents",
)
OPS_SERVER_TICKS = ConsumerSpec(
    "ops-servers",
    "ops",
    OPS,
    (tick_subject("server-health"),),
    "SSH, disk and memory checks of servers; incidents; moves servers ready <-> unreachable",
    # Each server's SSH check is bounded (ORCH_OPS__SSH_TIMEOUT_SECONDS) and they run at once.
    ack_wait_seconds=60.0,
)

INDEXER_PROJECT = ConsumerSpec(
    "indexer-project",
    "indexer",
    PROJECT,
    (
        ev.SpecRequested.TYPE,
        ev.SpecReady.TYPE,
        ev.SpecFailed.TYPE,
        ev.SpecRevisionRequested.TYPE,
        ev.SpecRevised.TYPE,
        ev.SpecRevisionFailed.TYPE,
        ev.ProvisioningFailed.TYPE,
        ev.RepoFailed.TYPE,
        ev.RepoRevisionFailed.TYPE,
        ev.CodeGenerated.TYPE,
        ev.CodeFailed.TYPE,
        ev.ProjectArchived.TYPE,
    ),
    "Remembers specs, revisions, the user's answers and step outcomes; forgets an archived project",
)
INDEXER_DEPLOYS = ConsumerSpec(
    "indexer-deploys",
    "indexer",
    DEPLOY,
    (
        ev.DeploySucceeded.TYPE,
        ev.DeployFailed.TYPE,
        ev.DeployRolledBack.TYPE,
        ev.DeployAwaitingSecrets.TYPE,
    ),
    "Remembers deploy outcomes; indexes the repository's files at each released commit",
    ack_wait_seconds=120.0,
)

CONSUMERS: tuple[ConsumerSpec, ...] = (
    COORDINATOR_INTENTS,
    COORDINATOR_OUTCOMES,
    COORDINATOR_DEPLOYS,
    COORDINATOR_TICKS,
    ANALYST,
    PROVISIONER,
    REPO,
    REPO_RECONCILE,
    ENGINEER,
    DEPLOYER,
    NOTIFIER,
    OPS_TICKS,
    INDEXER_PROJECT,
    INDEXER_DEPLOYS,
    OPS_SERVER_TICKS,
)


def consumers_of(process: str) -> tuple[ConsumerSpec, ...]:
    return tuple(spec for spec in CONSUMERS if spec.process == process)


def stream_for_subject(subject: str) -> StreamSpec:
    """The stream that stores `subject` (each stream owns one top-level token)."""
    head = subject.split(".", 1)[0]
    for stream in STREAMS:
        if any(s.split(".", 1)[0] == head for s in stream.subjects):
            return stream
    raise ValueError(f"no stream stores subject {subject!r}; add it to contracts.topology")


# ---------------------------------------------------------------- who publishes what

#: Subjects each process publishes, besides the dead letters of its own durables. NATS
#: permissions are generated from this table (`infra.bus.permissions`), so a process that
#: starts emitting a new event must be listed here or the server refuses the publish.
#: Producers publish intents only (the API and CLI also record stored secret names, and the
#: API relays alerts as notifications); the scheduler publishes its ticks.
#: `notify.requested` is open to every consumer for progress.
PRODUCER_EMITS: dict[str, tuple[str, ...]] = {
    # The API also relays Alertmanager's alerts to the admins' chats (`POST /admin/alerts`).
    "api": ("intents.>", ev.SecretStored.TYPE, ev.NotificationRequested.TYPE),
    "telegram_bot": ("intents.>",),
    "scheduler": (f"{ev.SchedulerTick.TYPE}.>",),
}
CONSUMER_EMITS: dict[str, tuple[str, ...]] = {
    "coordinator": (
        ev.SpecRequested.TYPE,
        ev.ProvisionRequested.TYPE,
        ev.RepoRequested.TYPE,
        ev.CodeRequested.TYPE,
        ev.DeployRequested.TYPE,
        ev.DeployStopRequested.TYPE,
        ev.ProjectArchived.TYPE,
        ev.DeployRestartRequested.TYPE,
        ev.SpecRevisionRequested.TYPE,
        ev.RepoRevisionRequested.TYPE,
        ev.RepoAdoptRequested.TYPE,
    ),
    "analyst": (
        ev.ClarificationAsked.TYPE,
        ev.SpecReady.TYPE,
        ev.SpecFailed.TYPE,
        ev.SpecRevised.TYPE,
        ev.SpecRevisionFailed.TYPE,
    ),
    "provisioner": (
        ev.ResourcesAllocated.TYPE,
        ev.ProvisioningFailed.TYPE,
        ev.ResourcesReleased.TYPE,
    ),
    "repo": (
        ev.RepoCreated.TYPE,
        ev.RepoFailed.TYPE,
        ev.RepoRevised.TYPE,
        ev.RepoRevisionFailed.TYPE,
        ev.RepoAdopted.TYPE,
        # The reconciliation: incidents, and the ports it frees.
        ev.IncidentOpened.TYPE,
        ev.IncidentResolved.TYPE,
        ev.ResourcesReleased.TYPE,
    ),
    "engineer": (ev.CodeGenerated.TYPE, ev.CodeFailed.TYPE),
    "deployer": (
        ev.DeploySucceeded.TYPE,
        ev.DeployFailed.TYPE,
        ev.DeployRolledBack.TYPE,
        ev.DeployStopped.TYPE,
        ev.DeployAwaitingSecrets.TYPE,
        ev.DeployRestarted.TYPE,
    ),
    "notifier": (),
    "ops": (ev.IncidentOpened.TYPE, ev.IncidentResolved.TYPE),
    "indexer": (),
}
# ---------------------------------------------------------------- request/reply

#: Core NATS request/reply (not a stream): a step asks the indexer for memory
#: (`contracts.memory`). The indexer's replicas answer in one queue group.
MEMORY_SEARCH_SUBJECT = "memory.search"
MEMORY_SEARCH_QUEUE = "indexer"
#: The only processes that may ask; the indexer is the only one that answers.
MEMORY_SEARCHERS: tuple[str, ...] = ("analyst", "engineer")
MEMORY_RESPONDER = "indexer"

#: Durables a process may read the info of besides its own: the coordinator tells a person how
#: many builds or deploys are ahead of their project (`consumers/coordinator/queues.py`).
QUEUE_READERS: dict[str, tuple[ConsumerSpec, ...]] = {"coordinator": (ENGINEER, DEPLOYER)}

#: The subject prefix other systems may publish to, with the `external` NATS user.
EXTERNAL_PUBLISH: tuple[str, ...] = ("intents.>",)
