"""The consumer runtime: everything a step needs around its handler, so handlers stay thin.

Each durable is pulled in batches (as many messages as are waiting, up to the durable's
`batch_size`). A batch is one transaction: one inbox lookup for all its events, the handlers
one after another, one multi-row insert of inbox rows and one of outbox rows, one commit.
After the commit the emitted events are published from memory (`Nats-Msg-Id` = event id)
and the messages are acknowledged. If any handler of a batch fails, the transaction is rolled
back and the batch's messages are handled one by one, each in its own transaction, so a
failure touches only its own message: transient failures are nacked with backoff, a
permanent failure or the last allowed delivery goes to the dead-letter stream with the
error. A malformed message is dead-lettered before any of this and never blocks the others.
Long steps send `in_progress` heartbeats so JetStream does not redeliver them elsewhere.

A message handled alone is the latency path, so it is kept lean. Each pull loop holds one
database connection between the messages it handles alone (`infra.db.step_connection`) and
binds the step's session to it, so there is no pool checkout and checkin per message (the
session is made when the handler first asks for it: a step that only emits an event never
pays for one); a connection that broke is invalidated and replaced, never reused, and a slow
step hands it back to the pool for its slow part (`StepContext.without_transaction`). A
single emitted event is published without a task of its own. The loop asks for its next
message as soon as a step has committed (`infra.bus.pull`), so one that arrived meanwhile is
in hand once the step's event is published and its message acknowledged, not a fetch round
trip later (it is what a message queued behind a slow one waited for). The inbox lookup is
sent before the transaction begins, in one round trip (under read committed it sees what the
transaction's first statement would); the inbox and outbox rows go in one statement,
pipelined with `COMMIT` after the handler's writes, or committing by itself when the handler
wrote nothing. Published rows are marked by one background task per process every second
instead of a transaction per message, a batch's heartbeat task starts only once the batch has
run for an interval, and per-message logs are at debug level. Objects built at startup are
frozen out of the cyclic collector: its full pass over them took 65-95 ms every few seconds,
and the messages arriving meanwhile were the p99.

Measured with `bench/runtime_throughput.py --batch-size 1 --no-stack-memory` on a 2-core
machine that other work shared (three runs each, interleaved, load average 0.8-2.5), against
a hand-written nats-py + psycopg loop in the same run: the p99 went from 4.0x, 22x and 2.6x
the loop's (a full collection landed in the latency window of two) to 1.07x, 0.93x and 0.94x;
CPU per event from 1.3 ms (2.2x-2.3x the loop's) to 0.8 ms (1.3x-1.4x); events/s from 0.5x to
0.7x-0.8x. When the machine was quiet (load 0.5-1.1), six interleaved runs each: the loop's
p99 was 1.4-2.7 ms, the runtime's from 1.7x-2.7x of it to 1.0x-2.1x (four of six within 1.5x).
What is left is the runtime's extra CPU per message (the inbox lookup, the outbox row, the
metrics and log context: 0.8 ms against the loop's 0.6), mostly psycopg's and SQLAlchemy's
Python per call; neither the relay nor the published marks changed the p99 when turned off.

The session made on demand and the early pull request (issue 9), same benchmark, six runs
each interleaved with the version before, in two quiet windows (load average 1.1-2.6): the
runtime's p99 was 2.8-4.4 ms against the loop's 2.2-3.0, 1.16x-1.57x (five of six within
1.5x); before, 2.8-5.5 ms against 2.0-3.6, 0.97x-2.09x (also five of six). CPU per event
went from 0.74-0.92 ms to 0.69-0.77 (the loop's: 0.56-0.64), events/s from 0.66x-0.86x the
loop's to 0.93x-1.08x. Runs under load average 4-14 scattered from 0.1x to 19x for both
versions alike: the ratio is set by the moments the machine stalls one of the two (they run
one after the other), not by the runtime's path. What the early request changes is measured
directly: a message queued behind the one before started 0.01 ms after it was done (median;
0.09 ms p90), where it waited 0.5-0.6 ms for the fetch (2.1-2.8 ms p90) at load average
8-13. With the default batch size the runtime kept 5.6x-17x the loop's events/s (before
3.3x-5.2x; runs at load average 3-9).

Why not FastStream's subscriber pipeline: measured here, its per-message path cost ~6.8 ms
of CPU per event and its batch loop waits to fill a batch until its timeout, which is the
latency of every quiet moment. The process connects with nats-py through
`infra.bus.connection` (which works around a handshake that nats-py leaves unfinished).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.envelope import Event
from contracts.topology import ConsumerSpec, consumers_of
from infra.bus.codec import MalformedEvent, decode
from infra.bus.connection import connect, on_reconnect
from infra.bus.credentials import process_credentials
from infra.bus.dead_letter import dead_letter
from infra.bus.faults import DatabaseGate, is_connectivity_error, is_contention_error
from infra.bus.publisher import JetStreamPublisher
from infra.bus.pull import PullRequests
from infra.bus.topology import apply_consumers, ensure_streams, transient_max_deliver
from infra.db.outbox import (
    HandledEvent,
    OutboxRelay,
    OutboxRow,
    PublishedMarks,
    begin_step,
    commit_step,
    publish_rows,
    record_steps,
    recorded_results,
    stored_rows,
)
from infra.db.session import make_engine, make_sessionmaker
from infra.db.step_connection import StepConnection
from infra.health import HealthChecks, database_reachable, nats_connected
from infra.logging import bind_message_context, configure_logging
from infra.metrics import (
    DEAD_LETTERS,
    STEP_DURATION,
    STEP_OUTCOMES,
    ConsumerLagCollector,
    PeriodicCollector,
)
from infra.process_endpoints import ProcessEndpoints
from infra.settings import ConsumerSettings, Settings, get_settings

E = TypeVar("E", bound=Event)
HandlerResult = Event | Sequence[Event] | None
Handler = Callable[["StepContext", Any], Awaitable[HandlerResult]]

log = structlog.get_logger(__name__)


class PermanentError(Exception):
    """Retrying cannot help (bad input, a refused request): dead-letter at once."""


class TransientError(Exception):
    """Worth retrying (a network blip, a dependency that is down): nack with a long backoff.

    It gets its own schedule (`consumer.transient_backoff_seconds`, capped) and a larger budget
    (`infra.bus.topology.TRANSIENT_MAX_DELIVER`), so an outage of an LLM provider or a git host
    lasting an hour does not dead-letter the work waiting on it.
    """


#: The connection the running pull loop holds between the steps it handles alone.
_HELD_CONNECTION: contextvars.ContextVar[StepConnection | None] = contextvars.ContextVar(
    "held_connection", default=None
)

#: The running pull loop's requests, asked early once the last step of a batch has committed.
_PULL_REQUESTS: contextvars.ContextVar[PullRequests | None] = contextvars.ContextVar(
    "pull_requests", default=None
)

#: Free re-runs of a step that met a dead pooled connection while the database was up (after a
#: database restart every pooled connection is dead; the pool replaces them one by one).
_STALE_CONNECTION_RERUNS = 3


@dataclass
class StepContext:
    """What a handler gets besides its event."""

    consumer: str
    log: structlog.stdlib.BoundLogger
    delivery: int
    _msg: Msg = field(repr=False)
    #: The batch's session; a step handled alone gets its own when it first asks (`session`).
    _session: AsyncSession | None = field(default=None, repr=False)
    _sessionmaker: async_sessionmaker[AsyncSession] | None = field(default=None, repr=False)

    #: In a batch the transaction is shared with other events' steps, so it cannot be closed.
    _batched: bool = field(default=False, repr=False)
    #: The pull loop's held connection the session is bound to (a step handled alone).
    _held: StepConnection | None = field(default=None, repr=False)

    @property
    def session(self) -> AsyncSession:
        """The step's session: its reads and writes commit with its inbox and outbox rows.

        Made on first use, bound to the pull loop's held connection: most steps that emit an
        event without reading anything never pay for a session.
        """
        if self._session is None:
            assert self._sessionmaker is not None and self._held is not None
            self._session = self._sessionmaker(bind=self._held.connection)
        return self._session

    @property
    def opened_session(self) -> AsyncSession | None:
        """The session if the handler asked for one, else None."""
        return self._session

    async def heartbeat(self) -> None:
        """Tell JetStream the step is still running (resets the ack timer)."""
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    @contextlib.asynccontextmanager
    async def without_transaction(self) -> AsyncIterator[None]:
        """Run the step's slow part (a container, an Ansible run) with no transaction open.

        A step's transaction otherwise stays open for as long as its handler runs: minutes of
        a connection idle in transaction, holding a pool slot and the vacuum horizon. Here the
        step's reads so far are committed (what it loaded stays usable: sessions do not expire
        on commit) and the connection goes back to the pool (even the one a pull loop holds
        between steps); what the step does after the block runs in a new transaction, on a
        connection taken then, committed with its inbox and outbox rows as before.

        Only reads may come before the block: a write (or a row lock, or an advisory lock)
        would be committed apart from the inbox record, or released early, so that raises.
        The session is not for use inside the block (it has no connection there); the slow
        part takes its own from the engine if it must (the deployer's slots do).
        In a batch the block asks the runtime to run this step alone (the batch is split).
        """
        if self._batched:
            raise _OwnTransactionNeeded(f"{self.consumer}: a slow step runs in its own transaction")
        session = self._session
        if session is not None and session.in_transaction():
            pending = session.new or session.dirty or session.deleted
            if pending or await session.scalar(_WROTE_OR_LOCKED):
                raise RuntimeError(
                    f"{self.consumer}: the step wrote or locked before `without_transaction`; "
                    "move its writes after the slow part, so they commit with its inbox record"
                )
            await session.commit()
        held = self._held
        if held is None:
            yield
            return
        # The connection the pull loop holds goes back to the pool for the slow part; what
        # the step does after it runs on whichever connection the loop takes next.
        await held.release()
        yield
        connection, _ = await held.acquire()
        if session is not None:
            session.sync_session.bind = connection.sync_connection


#: True once the step's transaction holds something a commit would make permanent or release.
_WROTE_OR_LOCKED = text(
    "SELECT pg_current_xact_id_if_assigned() IS NOT NULL OR EXISTS ("
    " SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory')"
)


class _OwnTransactionNeeded(Exception):
    """A step of a batch asked for `without_transaction`: the batch is split, each goes alone."""


class NatsUnavailable(RuntimeError):
    """The first NATS connection did not succeed in time; the message says why and what to do."""


class StepDeadlineExceeded(Exception):
    """A handler ran past its durable's step deadline and was cancelled (retried with backoff)."""


@dataclass
class _Delivery:
    """One message of a batch, decoded."""

    msg: Msg
    event: Event
    #: Acked, nacked or parked: no longer ours, so no longer heartbeaten.
    settled: bool = False
    #: The last of its batch to be handled: once it has committed, the loop asks for more.
    last: bool = False

    @property
    def number(self) -> int:
        return self.msg.metadata.num_delivered if self.msg.metadata else 1


def lock_order(deliveries: list[_Delivery]) -> list[_Delivery]:
    """The batch sorted by project id, stably (one project's events keep their order).

    A batch is one transaction; handlers lock their project's row. Replicas that take their
    batches' locks in the same order cannot deadlock each other.
    """

    def project(delivery: _Delivery) -> str:
        project_id = getattr(delivery.event, "project_id", None)
        return str(project_id) if project_id is not None else ""

    return sorted(deliveries, key=project)


def _freeze_startup_objects() -> None:
    """Keep what startup built (modules, mappers, schemas) out of every later collection.

    The cyclic collector's full pass walks every container object the process holds; with
    SQLAlchemy, pydantic and the handlers' modules loaded that took 65 to 95 ms here, once
    every few seconds of steady work, and the messages arriving meanwhile waited (it was the
    single-message path's p99). Frozen objects are never scanned; what startup left as
    garbage is collected first, so nothing is frozen that could have been freed, and `stop`
    unfreezes them.
    """
    gc.collect()
    gc.freeze()


def _as_list(result: HandlerResult) -> list[Event]:
    if result is None:
        return []
    if isinstance(result, Event):
        return [result]
    return list(result)


@contextlib.contextmanager
def _message_context(spec: ConsumerSpec, event: Event) -> Iterator[None]:
    project_id = getattr(event, "project_id", None)
    with bind_message_context(
        event_id=str(event.event_id),
        correlation_id=str(event.correlation_id),
        project_id=str(project_id) if project_id else None,
        event_type=event.TYPE,
        consumer=spec.durable,
    ):
        yield


class ConsumerApp:
    """One process's durables and handlers; `run()` is the process's main loop."""

    #: Whether `start` freezes what startup built (`_freeze_startup_objects`) and `stop` thaws
    #: it. A process that starts and stops many apps turns it off: the test suite's workers,
    #: whose harness freezes their large heap once (tests/conftest.py). There, a full
    #: collection at every start, and a thaw of the harness's freeze at every stop, cost the
    #: two workers about 45 s of CPU per suite run.
    freeze_startup_objects: ClassVar[bool] = True

    def __init__(
        self,
        process: str,
        *,
        settings: Settings | None = None,
        specs: Sequence[ConsumerSpec] | None = None,
    ) -> None:
        self.process = process
        self.settings = settings or get_settings()
        self.specs = tuple(specs) if specs is not None else consumers_of(process)
        self.handlers: dict[str, Handler] = {}
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.engine: AsyncEngine | None = None
        self.sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self.publisher: JetStreamPublisher | None = None
        self.nc: Client | None = None
        #: Metric collectors started with the process and stopped with it.
        self.collectors: list[PeriodicCollector] = []
        self._closed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._pullers: list[asyncio.Task[None]] = []
        #: Each pull loop's requests, told when the connection comes back (`_reconnected`).
        self._requests: set[PullRequests] = set()
        #: Pullers handling a batch right now (the others are only waiting on a fetch).
        self._busy: set[str] = set()
        self.marks: PublishedMarks | None = None
        #: Closed while the database is unreachable: pullers stop fetching until it is back.
        self.database: DatabaseGate | None = None
        #: `/livez` and `/readyz`; a consumer whose handlers need more (Vault) adds its check.
        self.health = HealthChecks(self.settings.health)
        self.health.add("nats", nats_connected(self._nats_connection))
        self.health.add("postgres", database_reachable(lambda: self.engine, lambda: self.database))
        self.endpoints = ProcessEndpoints(
            self.settings.metrics.host, self.settings.metrics.port, self.health
        )

    def handles(self, event_type: type[E]) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[event_type.TYPE] = fn
            return fn

        return register

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        settings = self.settings
        # First, so that probes see a live process that is not ready while it connects.
        self.endpoints.start()
        self.engine = make_engine(
            settings.database.url,
            pool_size=settings.database.pool_size,
            pre_ping=False,
            options=settings.database.session_options(),
        )
        self.sessionmaker = make_sessionmaker(self.engine)
        self.database = DatabaseGate(self.engine, settings.consumer.database_probe_seconds)
        # The process's own NATS user (from Vault), allowed only its events and its durables.
        credentials = await process_credentials(settings)
        connect_options = credentials.connect_options() if credentials is not None else {}
        nc = await self._first_connection(**connect_options)
        self.nc = nc
        jsm = nc.jsm()
        # Streams are the admin's (the launcher applies them); a consumer only creates a
        # missing one or fixes drift, which a server with per-process users never needs.
        await ensure_streams(
            jsm,
            duplicate_window=settings.nats.duplicate_window_seconds,
            replicas=settings.nats.stream_replicas,
        )
        await apply_consumers(jsm, self.specs, lookback=settings.nats.new_durable_lookback_seconds)
        js = nc.jetstream()
        self.publisher = JetStreamPublisher(js)
        on_reconnect(nc, self.publisher.connection_restored)
        for hook in self.on_startup:
            await hook()
        relay = OutboxRelay(self.sessionmaker, self.publisher, process=self.process)
        self._background.append(asyncio.create_task(relay.run(self._stopping), name="outbox-relay"))
        self.marks = PublishedMarks(self.sessionmaker)
        self._background.append(asyncio.create_task(self.marks.run(), name="outbox-marks"))
        self.collectors.append(ConsumerLagCollector(jsm, self.specs))
        for collector in self.collectors:
            collector.start()
        if self.freeze_startup_objects:
            _freeze_startup_objects()
        for spec in self.specs:
            for index in range(spec.parallel):
                name = f"pull-{spec.durable}-{index}"
                self._pullers.append(asyncio.create_task(self._pull(spec, name), name=name))
        log.info("consumer.started", process=self.process, durables=[s.durable for s in self.specs])

    async def _first_connection(self, **credentials: Any) -> Client:
        """Connect, or raise with the server's answer once it refuses or the timeout is spent.

        With unbounded reconnects nats-py retries a first connection forever, so a refused
        login (a wrong password, a user the server does not know) would leave a process that
        looks alive and consumes nothing; it exits instead and says why.
        """
        errors: list[Exception] = []
        refusals: list[Exception] = []
        refused = asyncio.Event()

        async def connection_error(error: Exception) -> None:
            errors.append(error)
            if "authorization violation" in str(error).lower() and not connected.done():
                refusals.append(error)
                refused.set()
            log.warning("nats.connection_error", process=self.process, error=repr(error))

        connected = asyncio.ensure_future(
            connect(
                self.settings.nats.url.split(","),
                # Reconnect forever; if the connection still closes, exit so a supervisor
                # restarts the process instead of it pulling from a dead connection.
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                closed_cb=self._connection_closed,
                reconnected_cb=self._reconnected,
                error_cb=connection_error,
                **credentials,
            )
        )
        refusal = asyncio.ensure_future(refused.wait())
        timeout = self.settings.nats.connect_timeout_seconds
        try:
            await asyncio.wait({connected, refusal}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            refusal.cancel()
        if connected.done():
            return connected.result()
        connected.cancel()
        await asyncio.gather(connected, return_exceptions=True)
        if refusals:
            raise refusals[0]
        last = f"{errors[-1]}" if errors else "no answer"
        raise NatsUnavailable(
            f"{self.process} could not connect to NATS at {self.settings.nats.url} as "
            f"{credentials.get('user') or 'an anonymous user'} within {timeout:g}s; the last "
            f"error was: {last}. Check that the server runs and that Vault holds this "
            "process's NATS password (the launcher writes it at each start)"
        )

    async def stop(self) -> None:
        # Idle pullers stop at once; busy ones finish the batch in hand (within the grace).
        self._stopping.set()
        for task in self._pullers:
            if task.get_name() not in self._busy:
                task.cancel()
        if self._pullers:
            _, pending = await asyncio.wait(
                self._pullers, timeout=self.settings.consumer.shutdown_grace_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._pullers, return_exceptions=True)
            self._pullers.clear()
        if self.marks is not None:
            await self.marks.flush()
        for collector in self.collectors:
            await collector.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        for hook in self.on_shutdown:
            await hook()
        if self.engine is not None:
            await self.engine.dispose()
        await self.endpoints.close()
        # What startup froze may be garbage now (a process that starts several apps).
        if self.freeze_startup_objects:
            gc.unfreeze()

    def _nats_connection(self) -> Client | None:
        return self.nc

    async def _reconnected(self) -> None:
        """A server that restarted, or the node the client moved from, forgot the requests it
        held: each pull loop asks again now rather than waiting out its request's expiry
        (`fetch_wait_seconds`). The publisher is told too (`on_reconnect`): a publish waiting
        for its acknowledgement sends again rather than waiting out its timeout (10 s)."""
        log.info("nats.reconnected", process=self.process)
        for requests in self._requests:
            requests.forget_outstanding()

    async def _connection_closed(self) -> None:
        self._closed.set()

    async def serve(self, stop: asyncio.Event | None = None) -> int:
        """Run until `stop` is set (0) or the NATS connection is closed for good (1)."""
        try:
            await self.start()
        except BaseException:
            await self.endpoints.close()
            raise
        stop = stop or asyncio.Event()
        waiters = [
            asyncio.create_task(stop.wait()),
            asyncio.create_task(self._closed.wait()),
            # A puller that ended on its own (it never should) would leave a process that
            # looks alive but consumes nothing: exit instead, and let the supervisor restart.
            *self._pullers,
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters[:2]:
                waiter.cancel()
            ended = [t.get_name() for t in self._pullers if t.done()]
            await self.stop()
        if stop.is_set():
            return 0
        if ended:
            log.error("consumer.puller_ended", process=self.process, pullers=ended)
        else:
            log.error("consumer.connection_closed", process=self.process)
        return 1

    def run(self) -> None:
        """Process entry point: logging, signals, exit code (`start` serves the endpoints)."""
        configure_logging(self.process)

        async def main() -> int:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            return await self.serve(stop)

        raise SystemExit(asyncio.run(main()))

    # ------------------------------------------------------------------ pulling

    def batch_size(self, spec: ConsumerSpec) -> int:
        # Parallel pull loops take one message each: they are there for slow steps, where a
        # batch would hold messages that another loop could start on.
        if spec.parallel > 1:
            return 1
        return self.settings.consumer.batch_size or spec.batch_size

    async def _pull(self, spec: ConsumerSpec, name: str) -> None:
        """Fetch what is waiting (up to a batch), handle it, repeat until stopping."""
        assert self.nc is not None and self.engine is not None
        consumer = self.settings.consumer
        requests = PullRequests(
            self.nc,
            spec.stream.name,
            spec.durable,
            batch=self.batch_size(spec),
            expires=consumer.fetch_wait_seconds,
            heartbeat=consumer.heartbeat_seconds,
        )
        await requests.open()
        self._requests.add(requests)
        held = StepConnection(self.engine)
        # A task's context is its own: each loop's steps see the loop's connection and requests.
        _HELD_CONNECTION.set(held)
        _PULL_REQUESTS.set(requests)
        try:
            await self._pull_until_stopped(requests, spec, name)
        finally:
            # Unsubscribed here, the connection's drain at shutdown does not wait on it.
            self._requests.discard(requests)
            with contextlib.suppress(Exception):
                await requests.close()
            with contextlib.suppress(Exception):
                await held.release()

    async def _pull_until_stopped(
        self, requests: PullRequests, spec: ConsumerSpec, name: str
    ) -> None:
        while not self._stopping.is_set():
            if self.database is not None and not self.database.is_open:
                # The database is down: fetching more would only hold more messages idle.
                await self.database.opened()
                continue
            try:
                # Returns as soon as anything is there; waits up to `fetch_wait` when idle.
                msgs = await requests.fetch()
                if not msgs:
                    continue
            except Exception as exc:
                if self._closed.is_set():
                    return
                log.warning("consumer.fetch_failed", consumer=spec.durable, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            self._busy.add(name)
            try:
                await self.process_batch(spec, msgs)
            except Exception:
                # A bug in the runtime must not kill the loop; the messages will be redelivered.
                log.exception("consumer.batch_crashed", consumer=spec.durable)
            finally:
                self._busy.discard(name)

    # ------------------------------------------------------------------ delivery

    async def process_batch(self, spec: ConsumerSpec, msgs: Sequence[Msg]) -> None:
        """Handle one fetched batch end to end; every message ends acked, nacked or parked.

        A failure while handling one message (even a bug here) is that message's alone: it is
        nacked and the rest of the batch goes on.
        """
        started = time.perf_counter()
        deliveries: list[_Delivery] = []
        for msg in msgs:
            try:
                deliveries.append(_Delivery(msg, decode(msg.subject, msg.data, msg.headers)))
            except MalformedEvent as exc:
                number = msg.metadata.num_delivered if msg.metadata else 1
                await self._dead_letter(spec, msg, str(exc), number, "malformed")
        if not deliveries:
            return
        heartbeat = _HeartbeatTimer(self._heartbeat, deliveries, self.settings.consumer)
        # A redelivered message has failed before (or its replica died): it goes alone, so a
        # poison message does not make every batch it lands in fail and re-run one by one.
        fresh = lock_order([d for d in deliveries if d.number == 1])
        alone = [d for d in deliveries if d.number > 1]
        try:
            together = len(fresh) > 1 and await self._handle_together(
                spec, fresh, started, last=not alone
            )
            if not together:
                alone = fresh + alone
            if alone:
                alone[-1].last = True
            for delivery in alone:
                try:
                    await self._handle_alone(spec, delivery)
                except Exception:
                    log.exception("consumer.message_crashed", consumer=spec.durable)
                    await self._settle(delivery, "nak", self._backoff(delivery.number))
        finally:
            heartbeat.stop()

    async def _handle_together(
        self, spec: ConsumerSpec, deliveries: list[_Delivery], started: float, *, last: bool
    ) -> bool:
        """The fast path: the whole batch in one transaction. False if any handler failed.

        `last`: no message of the batch is left to handle after these (none was redelivered).
        """
        assert self.sessionmaker is not None
        bound = structlog.get_logger(f"consumers.{self.process}")
        if any(d.event.TYPE not in self.handlers for d in deliveries):
            return False
        handled: list[HandledEvent] = []
        duplicates: dict[uuid.UUID, list[uuid.UUID]] = {}
        try:
            async with self.sessionmaker() as session, session.begin():
                ids = [d.event.event_id for d in deliveries]
                duplicates = await recorded_results(session, spec.durable, ids)
                seen = set(duplicates)
                for delivery in deliveries:
                    event = delivery.event
                    if event.event_id in seen:
                        duplicates.setdefault(event.event_id, [])
                        continue
                    seen.add(event.event_id)
                    with _message_context(spec, event):
                        ctx = StepContext(
                            spec.durable,
                            bound,
                            delivery.number,
                            delivery.msg,
                            _session=session,
                            _batched=True,
                        )
                        emitted = _as_list(
                            await self._within_deadline(spec, self.handlers[event.TYPE](ctx, event))
                        )
                    handled.append(
                        HandledEvent(event.event_id, tuple(OutboxRow.of(e) for e in emitted))
                    )
                await record_steps(session, spec.durable, handled)
        except Exception as exc:
            bound.info("batch.split", consumer=spec.durable, size=len(deliveries), error=str(exc))
            if is_connectivity_error(exc) and self.database is not None:
                # Split only once the database is back: alone, each would wait here anyway.
                await self.database.wait_until_reachable()
            return False
        if last:
            await self._ask_early()
        rows = [row for h in handled for row in h.emitted]
        earlier = [i for ids in duplicates.values() for i in ids]
        rows += await self._unpublished(earlier)
        published = await self._publish(rows)
        for delivery in deliveries:
            delivery.settled = True
        await asyncio.gather(*(d.msg.ack() for d in deliveries), return_exceptions=True)
        if published and self.marks is not None:
            self.marks.add(rows)
        elapsed = time.perf_counter() - started
        handled_ids = {h.event_id for h in handled}
        for delivery in deliveries:
            outcome = "ok" if delivery.event.event_id in handled_ids else "duplicate"
            handled_ids.discard(delivery.event.event_id)
            self._observe(spec, delivery.event, outcome, elapsed)
        return True

    async def _handle_alone(self, spec: ConsumerSpec, delivery: _Delivery) -> None:
        """One message in its own transaction; its failure is its own."""
        started = time.perf_counter()
        event = delivery.event
        with _message_context(spec, event):
            outcome = await self._decide(spec, delivery)
        self._observe(spec, event, outcome, time.perf_counter() - started)

    async def _decide(self, spec: ConsumerSpec, delivery: _Delivery) -> str:
        assert self.sessionmaker is not None
        bound = structlog.get_logger(f"consumers.{self.process}")
        msg, event, number = delivery.msg, delivery.event, delivery.number
        handler = self.handlers.get(event.TYPE)
        if handler is None:
            return await self._no_handler(spec, delivery)
        stale_reruns = 0
        while True:
            try:
                rows = await self._run_step(spec, delivery, handler, bound)
            except PermanentError as exc:
                parked = await self._dead_letter(
                    spec, msg, f"permanent: {exc}", number, None, delivery
                )
                return "dead_letter" if parked else "retry"
            except asyncio.CancelledError:
                # Shutdown: hand the message back now rather than after its ack_wait.
                await self._settle(delivery, "nak", 0)
                raise
            except Exception as exc:
                if is_connectivity_error(exc) and self.database is not None:
                    # The database, not the step, failed: wait for it on this same delivery.
                    outage = await self.database.wait_until_reachable()
                    if outage or stale_reruns < _STALE_CONNECTION_RERUNS:
                        stale_reruns += 0 if outage else 1
                        bound.warning("step.rerun_after_database_error", error=str(exc))
                        continue
                return await self._failed(spec, delivery, exc, bound)
            break
        if delivery.last:
            await self._ask_early()
        published = await self._publish(rows.emitted)
        await self._settle(delivery, "ack")
        if published and self.marks is not None:
            self.marks.add(rows.emitted)
        return "duplicate" if rows.duplicate else "ok"

    async def _ask_early(self) -> None:
        """The batch's last step has committed: ask for the next messages while it is published
        and acknowledged, so they are here when the loop is (`infra.bus.pull`)."""
        requests = _PULL_REQUESTS.get()
        if requests is None or self._stopping.is_set():
            return
        if self.database is not None and not self.database.is_open:
            return
        try:
            await requests.ask()
        except Exception as exc:
            # The loop asks again when it fetches, and reports there if it still fails.
            log.debug("consumer.early_pull_failed", error=str(exc))

    async def _failed(
        self,
        spec: ConsumerSpec,
        delivery: _Delivery,
        exc: Exception,
        bound: structlog.stdlib.BoundLogger,
    ) -> str:
        """A failed step spends its delivery: retried with backoff, or dead-lettered at the end."""
        number = delivery.number
        # Waiting on a lock another step holds is contention, not the step's fault.
        transient = isinstance(exc, TransientError) or is_contention_error(exc)
        budget = transient_max_deliver(spec) if transient else spec.max_deliver
        if number >= budget:
            bound.exception("step.failed_finally", delivery=number)
            parked = await self._dead_letter(
                spec,
                delivery.msg,
                f"failed {number} times, last: {type(exc).__name__}: {exc}",
                number,
                None,
                delivery,
            )
            return "dead_letter" if parked else "retry"
        delay = self._backoff(number, transient=transient)
        bound.warning("step.retry", delivery=number, delay=delay, error=str(exc))
        await self._settle(delivery, "nak", delay)
        return "retry"

    async def _no_handler(self, spec: ConsumerSpec, delivery: _Delivery) -> str:
        """An event type this process does not know.

        During a rolling upgrade the new version widens the durable's filter first, so an old
        replica may fetch a type only the new one handles: hand it back with a long delay for a
        new replica to take, and dead-letter it only when nobody has taken it within the
        transient budget (a filter that is really wrong).
        """
        number, event = delivery.number, delivery.event
        if number >= transient_max_deliver(spec):
            await self._dead_letter(
                spec,
                delivery.msg,
                f"{self.process} has no handler for {event.TYPE}",
                number,
                None,
                delivery,
            )
            return "dead_letter"
        delay = self._backoff(number, transient=True)
        log.warning("step.no_handler_yet", consumer=spec.durable, delivery=number, delay=delay)
        await self._settle(delivery, "nak", delay)
        return "retry"

    def step_timeout(self, spec: ConsumerSpec) -> float:
        """The deadline of one step of `spec`'s durable, in seconds."""
        consumer = self.settings.consumer
        return consumer.step_timeouts.get(spec.durable, consumer.step_timeout_seconds)

    async def _within_deadline(
        self, spec: ConsumerSpec, step: Awaitable[HandlerResult]
    ) -> HandlerResult:
        """Run a handler under its durable's deadline; past it the handler is cancelled."""
        seconds = self.step_timeout(spec)
        try:
            async with asyncio.timeout(seconds) as deadline:
                return await step
        except TimeoutError as exc:
            if deadline.expired():
                raise StepDeadlineExceeded(
                    f"the step ran past its {seconds:g} s deadline and was cancelled; it will be "
                    f"retried (raise ORCH_CONSUMER__STEP_TIMEOUTS for {spec.durable} if the "
                    "step is legitimately this slow)"
                ) from exc
            raise

    async def _run_step(
        self,
        spec: ConsumerSpec,
        delivery: _Delivery,
        handler: Handler,
        bound: structlog.stdlib.BoundLogger,
    ) -> _StepRows:
        """Run the handler once in a transaction with its inbox check and records.

        On the pull loop's held connection (`infra.db.step_connection`); a step run outside a
        pull loop (a test calling `process_batch`) leases one for itself.
        """
        held = _HELD_CONNECTION.get()
        if held is not None:
            return await self._run_step_on(held, spec, delivery, handler, bound)
        assert self.engine is not None
        own = StepConnection(self.engine)
        try:
            return await self._run_step_on(own, spec, delivery, handler, bound)
        finally:
            await own.release()

    async def _run_step_on(
        self,
        held: StepConnection,
        spec: ConsumerSpec,
        delivery: _Delivery,
        handler: Handler,
        bound: structlog.stdlib.BoundLogger,
    ) -> _StepRows:
        assert self.sessionmaker is not None
        event = delivery.event
        _, driver = await held.acquire()
        ctx: StepContext | None = None
        try:
            recorded = await begin_step(driver, spec.durable, event.event_id)
            if recorded is not None:
                # Re-publish only what the first run emitted and nobody published yet (it may
                # have died before publishing); published outputs are not sent down the chain
                # again, so a late duplicate does not cascade.
                bound.debug("step.duplicate")
                rows = await self._unpublished(recorded)
                return _StepRows(rows, duplicate=True)
            # The session, if the handler asks for one, is bound to the held connection: it
            # begins its transaction there (psycopg sends `BEGIN` with its first statement)
            # and a commit of its own costs no round trip.
            ctx = StepContext(
                spec.durable,
                bound,
                delivery.number,
                delivery.msg,
                _sessionmaker=self.sessionmaker,
                _held=held,
            )
            emitted = tuple(
                OutboxRow.of(e)
                for e in _as_list(await self._within_deadline(spec, handler(ctx, event)))
            )
            # A slow step may have handed the connection back and taken another meanwhile.
            await commit_step(
                ctx.opened_session,
                held.driver,
                spec.durable,
                HandledEvent(event.event_id, emitted),
            )
        except BaseException:
            session = ctx.opened_session if ctx is not None else None
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.close()
            with contextlib.suppress(Exception):
                await held.reset()
            raise
        bound.debug("step.done", emitted=[row.subject for row in emitted])
        return _StepRows(list(emitted), duplicate=False)

    async def _unpublished(self, event_ids: Sequence[uuid.UUID]) -> list[OutboxRow]:
        """Stored outputs not yet marked published (a duplicate's only job is to finish those)."""
        assert self.sessionmaker is not None
        try:
            return await stored_rows(self.sessionmaker, event_ids, unpublished_only=True)
        except Exception as exc:
            # The relay publishes them in any case; the duplicate is still acknowledged.
            log.info("outbox.lookup_deferred", count=len(event_ids), error=str(exc))
            return []

    async def _settle(self, delivery: _Delivery, how: str, delay: float = 0.0) -> None:
        """Ack or nak a message we hold, after taking it off the heartbeat.

        The order matters: a `+WPI` sent after a delayed nak resets the server's pending
        timestamp and cancels the delay, so a settled message is never heartbeaten again.
        """
        delivery.settled = True
        try:
            if how == "ack":
                await delivery.msg.ack()
            else:
                await delivery.msg.nak(delay=delay)
        except Exception as exc:
            # NATS is away: the server redelivers after ack_wait, and the inbox dedups.
            log.warning("consumer.settle_failed", how=how, error=str(exc))

    async def _publish(self, rows: Sequence[OutboxRow]) -> bool:
        """Publish committed rows; False leaves them to the relay (the step is done anyway)."""
        assert self.publisher is not None
        try:
            await publish_rows(self.publisher, rows)
        except Exception as exc:
            log.warning("outbox.publish_deferred", count=len(rows), error=str(exc))
            return False
        return True

    def _backoff(self, delivery: int, *, transient: bool = False) -> float:
        consumer = self.settings.consumer
        steps = consumer.transient_backoff_seconds if transient else consumer.backoff_seconds
        return steps[min(delivery, len(steps)) - 1] if steps else 1.0

    def _observe(self, spec: ConsumerSpec, event: Event, outcome: str, seconds: float) -> None:
        STEP_DURATION.labels(self.process, spec.durable, event.TYPE, outcome).observe(seconds)
        STEP_OUTCOMES.labels(self.process, spec.durable, event.TYPE, outcome).inc()

    async def _heartbeat(self, deliveries: Sequence[_Delivery]) -> None:
        """Keep the batch's unsettled messages ours until they are settled or the batch ends."""
        interval = self.settings.consumer.heartbeat_seconds
        # Started once the batch has run for `interval`; ends by itself once all are settled,
        # even should its cancel be lost.
        while not all(delivery.settled for delivery in deliveries):
            for delivery in deliveries:
                if delivery.settled:
                    continue
                with contextlib.suppress(Exception):
                    await delivery.msg.in_progress()
            await asyncio.sleep(interval)

    async def _dead_letter(
        self,
        spec: ConsumerSpec,
        msg: Msg,
        error: str,
        delivery: int,
        undecoded: str | None,
        held: _Delivery | None = None,
    ) -> bool:
        """Park `msg` with its error in the dead-letter stream; False if that failed.

        `undecoded` labels the step metrics of a message that never became an event; decoded
        ones are counted by their caller. If the dead-letter publish fails the message is not
        terminated but nacked: the server allows more deliveries than the runtime's budget
        (`infra.bus.topology.DEAD_LETTER_SPARE`), so it comes back and is parked then.
        """
        assert self.publisher is not None
        if held is not None:
            held.settled = True
        log.error("step.dead_letter", consumer=spec.durable, error=error, delivery=delivery)
        try:
            await dead_letter(self.publisher, spec, msg, error, delivery)
        except Exception as exc:
            delay = self._backoff(delivery)
            log.error(
                "step.dead_letter_failed",
                consumer=spec.durable,
                delivery=delivery,
                retry_in=delay,
                error=f"{type(exc).__name__}: {exc}",
            )
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
            return False
        DEAD_LETTERS.labels(self.process, spec.durable).inc()
        if undecoded:
            STEP_OUTCOMES.labels(self.process, spec.durable, undecoded, "dead_letter").inc()
        with contextlib.suppress(Exception):
            await msg.term()
        return True


class _HeartbeatTimer:
    """Starts a batch's heartbeat task only once the batch has run for a heartbeat interval.

    Nearly every batch is settled well within one interval; a timer costs it one loop entry
    where a task started at once cost a task's creation, first step and cancellation.
    """

    def __init__(
        self,
        beat: Callable[[Sequence[_Delivery]], Coroutine[Any, Any, None]],
        deliveries: Sequence[_Delivery],
        consumer: ConsumerSettings,
    ) -> None:
        self._beat = beat
        self._deliveries = deliveries
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(consumer.heartbeat_seconds, self._start)

    def _start(self) -> None:
        self._task = asyncio.create_task(self._beat(self._deliveries))

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


@dataclass(frozen=True)
class _StepRows:
    emitted: list[OutboxRow]
    duplicate: bool
