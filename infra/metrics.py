"""Prometheus metrics every process exports on `/metrics`, and the collectors that feed the gauges.

The consumer runtime records each step's duration and outcome (`record_step`) and the LLM
steps record their tokens and cost (`record_llm_usage`); handlers never touch metrics.
Gauges that describe shared state (JetStream consumer lag, projects per state) are read
periodically by collectors running inside the processes that own that state; several
replicas export the same series, so dashboards aggregate them with `max by (...)`.

`infra.process_endpoints` serves them, next to `/livez` and `/readyz`.

Metric and label names are part of the operator's interface: the Grafana dashboards,
alert rules and KEDA triggers under `infra/` and `helm/` query exactly these.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

import structlog
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.topology import CONSUMERS, DLQ, ConsumerSpec, StreamSpec
from infra.db.models import Project, ProjectState

log = structlog.stdlib.get_logger(__name__)

Outcome = Literal["ok", "duplicate", "retry", "dead_letter"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "duplicate", "retry", "dead_letter")

# Steps range from a few milliseconds (a state transition) to minutes (a coding agent, a deploy).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

STEP_DURATION = Histogram(
    "orchestrator_step_duration_seconds",
    "Time one consumer spent handling one message, by outcome",
    ("process", "consumer", "event_type", "outcome"),
    buckets=STEP_BUCKETS,
)
STEP_OUTCOMES = Counter(
    "orchestrator_step_outcomes",
    "Messages handled, by outcome: ok | duplicate | retry | dead_letter",
    ("process", "consumer", "event_type", "outcome"),
)
DEAD_LETTERS = Counter(
    "orchestrator_dead_letters",
    "Messages moved to the dead-letter stream",
    ("process", "consumer"),
)
OUTBOX_PENDING = Gauge(
    "orchestrator_outbox_pending",
    "Outbox rows written but not yet published to JetStream",
    ("process",),
)
LLM_TOKENS = Counter(
    "orchestrator_llm_tokens",
    "LLM tokens used, by project, pipeline stage and kind (prompt | completion)",
    ("project", "stage", "kind"),
)
LLM_COST = Counter(
    "orchestrator_llm_cost_usd",
    "LLM spend in US dollars at the configured prices, by project and stage",
    ("project", "stage"),
)
PROJECTS_BY_STATE = Gauge(
    "orchestrator_projects",
    "Projects per lifecycle state",
    ("state",),
)
DEPLOYS = Counter(
    "orchestrator_deploys",
    "Deploys finished, by outcome (succeeded | failed | rolled_back | awaiting_secrets)",
    ("outcome",),
)
CONSUMER_PENDING = Gauge(
    "orchestrator_consumer_pending",
    "Messages in the stream not yet delivered to this durable consumer (its lag)",
    ("consumer", "stream"),
)
CONSUMER_ACK_PENDING = Gauge(
    "orchestrator_consumer_ack_pending",
    "Messages delivered to this durable consumer and not yet acknowledged",
    ("consumer", "stream"),
)
CONSUMER_REDELIVERED = Gauge(
    "orchestrator_consumer_redelivered",
    "Messages of this durable consumer delivered more than once and still unacknowledged",
    ("consumer", "stream"),
)
CONSUMER_DELIVERED_SEQ = Gauge(
    "orchestrator_consumer_delivered_stream_seq",
    "Last stream sequence delivered to this durable consumer",
    ("consumer", "stream"),
)
STREAM_MESSAGES = Gauge(
    "orchestrator_stream_messages",
    "Messages stored in the stream",
    ("stream",),
)


def record_step(
    *, process: str, consumer: str, event_type: str, outcome: Outcome, seconds: float
) -> None:
    """Record one handled message; a dead letter also counts in `orchestrator_dead_letters`."""
    STEP_DURATION.labels(process, consumer, event_type, outcome).observe(seconds)
    STEP_OUTCOMES.labels(process, consumer, event_type, outcome).inc()
    if outcome == "dead_letter":
        DEAD_LETTERS.labels(process, consumer).inc()


def record_llm_usage(
    *, project: str, stage: str, prompt_tokens: int, completion_tokens: int, cost_usd: float
) -> None:
    """Record what one LLM call used, so spend shows per project and stage in Grafana."""
    LLM_TOKENS.labels(project, stage, "prompt").inc(prompt_tokens)
    LLM_TOKENS.labels(project, stage, "completion").inc(completion_tokens)
    LLM_COST.labels(project, stage).inc(cost_usd)


def set_projects_by_state(counts: dict[str, int], states: Iterable[str]) -> None:
    """Publish project counts; states with no project are set to 0 rather than disappearing."""
    for state in states:
        PROJECTS_BY_STATE.labels(state).set(counts.get(state, 0))


class JetStreamInfoSource(Protocol):
    """The two read-only calls of `nats.js.JetStreamManager` the lag collector needs."""

    async def consumer_info(self, stream: str, consumer: str) -> Any:
        """Durable consumer state (`num_pending`, `num_ack_pending`, ...)."""

    async def stream_info(self, name: str) -> Any:
        """Stream state (`state.messages`, ...)."""


class PeriodicCollector:
    """Runs `collect_once` every `interval` seconds in a background task until stopped.

    A failed collection is logged and retried at the next tick: metrics must never take a
    consumer down.
    """

    def __init__(self, name: str, collect: Callable[[], Awaitable[None]], interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"{name}: interval must be positive, got {interval}")
        self._name = name
        self._collect = collect
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self._name)
        return self._task

    async def stop(self) -> None:
        if self._task is None:
            return
        # The flag as well as the cancel: on Python 3.11 `asyncio.wait_for` (under every nats-py
        # request) swallows a cancel that lands as its answer arrives, and a loop that relied on
        # the cancel alone would run on while `stop` waits for it forever.
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._collect()
            except Exception:
                log.warning("metrics collection failed", collector=self._name, exc_info=True)
            if self._stopping:
                return
            await asyncio.sleep(self._interval)


class ConsumerLagCollector(PeriodicCollector):
    """Exports JetStream lag per durable consumer and stored messages per stream.

    Each process watches its own durables (`contracts.topology.consumers_of(process)`), so the
    gauges exist as long as someone consumes; the dead-letter stream is always watched because
    its growth is what operators alert on. A durable that does not exist yet is skipped.
    """

    def __init__(
        self,
        jsm: JetStreamInfoSource,
        consumers: Sequence[ConsumerSpec] = CONSUMERS,
        *,
        streams: Sequence[StreamSpec] | None = None,
        interval: float = 15.0,
    ) -> None:
        super().__init__("consumer-lag-collector", self.collect_once, interval)
        self._jsm = jsm
        self._consumers = tuple(consumers)
        if streams is None:
            by_name = {c.stream.name: c.stream for c in self._consumers}
            by_name.setdefault(DLQ.name, DLQ)
            streams = tuple(by_name.values())
        self._streams = tuple(streams)

    async def collect_once(self) -> None:
        for spec in self._consumers:
            try:
                info = await self._jsm.consumer_info(spec.stream.name, spec.durable)
            except NotFoundError:
                log.debug("durable not created yet", consumer=spec.durable)
                continue
            labels = (spec.durable, spec.stream.name)
            CONSUMER_PENDING.labels(*labels).set(info.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(*labels).set(info.num_ack_pending or 0)
            CONSUMER_REDELIVERED.labels(*labels).set(info.num_redelivered or 0)
            delivered = info.delivered.stream_seq if info.delivered is not None else 0
            CONSUMER_DELIVERED_SEQ.labels(*labels).set(delivered or 0)
        for stream in self._streams:
            try:
                stream_info = await self._jsm.stream_info(stream.name)
            except NotFoundError:
                log.debug("stream not created yet", stream=stream.name)
                continue
            STREAM_MESSAGES.labels(stream.name).set(stream_info.state.messages)


class ProjectStateCollector(PeriodicCollector):
    """Exports how many projects are in each lifecycle state, read from PostgreSQL.

    Runs in the coordinator, the process that owns the state machine; a count query every
    `interval` seconds is cheap next to the transitions themselves and cannot drift from the
    table the way per-transition increments would after a crash.
    """

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, interval: float = 30.0
    ) -> None:
        super().__init__("project-state-collector", self.collect_once, interval)
        self._sessionmaker = sessionmaker

    async def collect_once(self) -> None:
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(Project.state, func.count()).group_by(Project.state)
            )
            counts = {str(state): int(count) for state, count in rows.tuples()}
        set_projects_by_state(counts, [s.value for s in ProjectState])
