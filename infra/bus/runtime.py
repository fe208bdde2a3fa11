"""The consumer runtime: everything a step needs around its handler, so handlers stay thin.

For each message of a durable pull consumer it decodes the event (a malformed one goes to the
dead-letter stream), skips it if the inbox says it was handled (re-publishing the recorded
result), runs the handler in a transaction that also writes the inbox and outbox rows,
publishes the outbox after commit, and acknowledges. Failures are nacked with backoff; a
permanent failure, or the last allowed delivery, is dead-lettered with the error. Long steps
send `in_progress` heartbeats so JetStream does not redeliver them to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.aio.msg import Msg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.envelope import Event
from contracts.topology import ConsumerSpec, consumers_of
from infra.bus.codec import MalformedEvent, decode
from infra.bus.dead_letter import dead_letter
from infra.bus.publisher import JetStreamPublisher
from infra.bus.topology import apply_consumers, apply_streams
from infra.db.outbox import OutboxRelay, publish_outbox, record_step, recorded_result
from infra.db.session import make_engine, make_sessionmaker
from infra.logging import bind_message_context, configure_logging
from infra.metrics import (
    DEAD_LETTERS,
    STEP_DURATION,
    STEP_OUTCOMES,
    ConsumerLagCollector,
    PeriodicCollector,
    prometheus_middleware,
    start_metrics_server,
)
from infra.settings import Settings, get_settings

E = TypeVar("E", bound=Event)
HandlerResult = Event | Sequence[Event] | None
Handler = Callable[["StepContext", Any], Awaitable[HandlerResult]]

log = structlog.get_logger(__name__)


class PermanentError(Exception):
    """Retrying cannot help (bad input, a refused request): dead-letter at once."""


class TransientError(Exception):
    """Worth retrying (a network blip, a busy dependency): nack with backoff."""


@dataclass
class StepContext:
    """What a handler gets besides its event."""

    consumer: str
    session: AsyncSession
    log: structlog.stdlib.BoundLogger
    delivery: int
    _msg: Msg = field(repr=False)

    async def heartbeat(self) -> None:
        """Tell JetStream the step is still running (resets the ack timer)."""
        with contextlib.suppress(Exception):
            await self._msg.in_progress()


def _as_list(result: HandlerResult) -> list[Event]:
    if result is None:
        return []
    if isinstance(result, Event):
        return [result]
    return list(result)


class ConsumerApp:
    """One process's durables and handlers; `run()` is the process's main loop."""

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
        self.broker: NatsBroker | None = None
        self._closed = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        #: Metric collectors started with the process and stopped with it.
        self.collectors: list[PeriodicCollector] = []

    def handles(self, event_type: type[E]) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[event_type.TYPE] = fn
            return fn

        return register

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        settings = self.settings
        self.engine = make_engine(settings.database.url, pool_size=settings.database.pool_size)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.broker = NatsBroker(
            settings.nats.url.split(","),
            # Reconnect forever; if the connection still closes, exit so a supervisor restarts us
            # (FastStream's pull loop would otherwise spin silently on a closed connection).
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            closed_cb=self._connection_closed,
            middlewares=[prometheus_middleware(app_name=self.process)],
            logger=None,
        )
        for spec in self.specs:
            self._subscribe(spec)
        await self.broker.connect()
        nc = self.broker.connection
        jsm = nc.jsm()
        await apply_streams(
            jsm,
            duplicate_window=settings.nats.duplicate_window_seconds,
            replicas=settings.nats.stream_replicas,
        )
        await apply_consumers(jsm, self.specs)
        self.publisher = JetStreamPublisher(nc.jetstream())
        for hook in self.on_startup:
            await hook()
        relay = OutboxRelay(self.sessionmaker, self.publisher, process=self.process)
        self._background.append(asyncio.create_task(relay.run(), name="outbox-relay"))
        self.collectors.append(ConsumerLagCollector(jsm, self.specs))
        for collector in self.collectors:
            collector.start()
        await self.broker.start()
        log.info("consumer.started", process=self.process, durables=[s.durable for s in self.specs])

    async def stop(self) -> None:
        for collector in self.collectors:
            await collector.stop()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        if self.broker is not None:
            await self.broker.stop()
        for hook in self.on_shutdown:
            await hook()
        if self.engine is not None:
            await self.engine.dispose()

    async def _connection_closed(self) -> None:
        self._closed.set()

    async def serve(self, stop: asyncio.Event | None = None) -> int:
        """Run until `stop` is set (0) or the NATS connection is closed for good (1)."""
        await self.start()
        stop = stop or asyncio.Event()
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._closed.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await self.stop()
        if self._closed.is_set() and not stop.is_set():
            log.error("consumer.connection_closed", process=self.process)
            return 1
        return 0

    def run(self) -> None:
        """Process entry point: logging, metrics endpoint, signals, exit code."""
        configure_logging(self.process)
        start_metrics_server(self.settings.metrics.host, self.settings.metrics.port)

        async def main() -> int:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            return await self.serve(stop)

        raise SystemExit(asyncio.run(main()))

    # ------------------------------------------------------------------ delivery

    def _subscribe(self, spec: ConsumerSpec) -> None:
        assert self.broker is not None
        subscriber = self.broker.subscriber(
            spec.subjects[0],
            stream=JStream(spec.stream.name, declare=False),
            durable=spec.durable,
            pull_sub=PullSub(batch_size=self.settings.consumer.concurrency, timeout=1.0),
            ack_policy=AckPolicy.MANUAL,
            title=spec.durable,
            description=spec.description,
        )

        async def on_message(message: NatsMessage) -> None:
            await self.process_message(spec, message.raw_message)

        subscriber(on_message)

    def _backoff(self, delivery: int) -> float:
        steps = self.settings.consumer.backoff_seconds
        return steps[min(delivery, len(steps)) - 1] if steps else 1.0

    async def process_message(self, spec: ConsumerSpec, msg: Msg) -> None:
        """Handle one delivery end to end; never raises (every outcome is an ack decision)."""
        assert self.sessionmaker is not None and self.publisher is not None
        delivery = msg.metadata.num_delivered if msg.metadata else 1
        started = time.perf_counter()
        try:
            event = decode(msg.subject, msg.data, msg.headers)
        except MalformedEvent as exc:
            await self._dead_letter(spec, msg, str(exc), delivery, "malformed")
            return

        project_id = getattr(event, "project_id", None)
        with bind_message_context(
            event_id=str(event.event_id),
            correlation_id=str(event.correlation_id),
            project_id=str(project_id) if project_id else None,
            event_type=event.TYPE,
            consumer=spec.durable,
        ):
            outcome = await self._handle(spec, msg, event, delivery)
        STEP_DURATION.labels(self.process, spec.durable, event.TYPE, outcome).observe(
            time.perf_counter() - started
        )
        STEP_OUTCOMES.labels(self.process, spec.durable, event.TYPE, outcome).inc()

    async def _handle(self, spec: ConsumerSpec, msg: Msg, event: Event, delivery: int) -> str:
        assert self.sessionmaker is not None and self.publisher is not None
        bound = structlog.get_logger(f"consumers.{self.process}")
        handler = self.handlers.get(event.TYPE)
        if handler is None:
            await self._dead_letter(
                spec, msg, f"{self.process} has no handler for {event.TYPE}", delivery, None
            )
            return "dead_letter"

        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            emitted_ids = await self._run_step(spec, msg, event, handler, delivery, bound)
        except PermanentError as exc:
            await self._dead_letter(spec, msg, f"permanent: {exc}", delivery, None)
            return "dead_letter"
        except Exception as exc:
            if delivery >= spec.max_deliver:
                bound.exception("step.failed_finally", delivery=delivery)
                await self._dead_letter(
                    spec,
                    msg,
                    f"failed {delivery} times, last: {type(exc).__name__}: {exc}",
                    delivery,
                    None,
                )
                return "dead_letter"
            delay = self._backoff(delivery)
            bound.warning("step.retry", delivery=delivery, delay=delay, error=str(exc))
            await msg.nak(delay=delay)
            return "retry"
        finally:
            heartbeat.cancel()

        if emitted_ids is None:
            await msg.ack()
            return "duplicate"
        with contextlib.suppress(Exception):
            # Left unpublished, the rows are picked up by the relay; the step is done either way.
            await publish_outbox(self.sessionmaker, self.publisher, emitted_ids)
        await msg.ack()
        return "ok"

    async def _run_step(
        self,
        spec: ConsumerSpec,
        msg: Msg,
        event: Event,
        handler: Handler,
        delivery: int,
        bound: structlog.stdlib.BoundLogger,
    ) -> list[uuid.UUID] | None:
        """Run the handler once in a transaction; None means a duplicate (already handled)."""
        assert self.sessionmaker is not None and self.publisher is not None
        async with self.sessionmaker() as session:
            recorded = await recorded_result(session, spec.durable, event.event_id)
        if recorded is not None:
            # Re-publish what the first run emitted: it may have died before publishing.
            await publish_outbox(self.sessionmaker, self.publisher, recorded)
            bound.info("step.duplicate")
            return None
        try:
            async with self.sessionmaker() as session, session.begin():
                ctx = StepContext(spec.durable, session, bound, delivery, msg)
                emitted = _as_list(await handler(ctx, event))
                await record_step(session, spec.durable, event.event_id, emitted)
        except IntegrityError:
            # Another replica committed the same event first (redelivery race).
            async with self.sessionmaker() as session:
                if await recorded_result(session, spec.durable, event.event_id) is not None:
                    return None
            raise
        bound.info("step.done", emitted=[e.TYPE for e in emitted])
        return [e.event_id for e in emitted]

    async def _heartbeat(self, msg: Msg) -> None:
        interval = self.settings.consumer.heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _dead_letter(
        self, spec: ConsumerSpec, msg: Msg, error: str, delivery: int, outcome: str | None
    ) -> None:
        assert self.publisher is not None
        log.error("step.dead_letter", consumer=spec.durable, error=error, delivery=delivery)
        await dead_letter(self.publisher, spec, msg, error, delivery)
        DEAD_LETTERS.labels(self.process, spec.durable).inc()
        if outcome:
            STEP_OUTCOMES.labels(self.process, spec.durable, outcome, "dead_letter").inc()
        await msg.term()
