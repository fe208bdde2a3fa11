"""A prototype of changes proposed for `infra.bus.runtime`, measured by `runtime_throughput.py`.

It lives in `bench/` so the changes can be measured before anyone edits the platform; each
change can be switched on alone (`CHANGES`), so the benchmark attributes the gain to each.
Semantics stay those of `ConsumerApp`: one transaction per event holding the inbox row and
the outbox rows; publish after commit; a row left unpublished by a crash is relayed later.

- `one-session`: the duplicate check runs inside the step's own transaction instead of in a
  session of its own (one pool checkout, BEGIN and ROLLBACK fewer per event).
- `publish-from-memory`: after commit, publish the encoded rows the step already holds
  instead of reading them back from the outbox table.
- `coalesced-mark`: mark published rows in one UPDATE per batch of events, committed with
  `synchronous_commit = off` (a mark lost in a crash only makes the relay publish a row again,
  which the stream's duplicate window drops), instead of one fsynced transaction per event.
- `no-pre-ping`: no `SELECT 1` on every pool checkout; a dropped connection fails the step,
  which is retried, and SQLAlchemy then replaces the pool's connections.
- `no-barrier`: FastStream's `max_workers` subscriber, which fetches again as soon as a worker
  is free, instead of waiting for the slowest message of each fetched batch.
- `no-thread-hop`: the subscriber function takes no parameter and reads the message from
  FastStream's context; a `message: NatsMessage` parameter is resolved by a synchronous
  function that fast_depends runs in a worker thread, once per message.
- `core-inserts`: the inbox and outbox inserts name the tables, not the ORM classes, which
  skips SQLAlchemy's ORM bulk-insert machinery (same SQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsMessage, PullSub
from nats.aio.msg import Msg
from sqlalchemy import Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_sessionmaker,
)

from contracts.envelope import Event
from contracts.topology import ConsumerSpec
from infra.bus import runtime
from infra.bus.runtime import ConsumerApp, Handler, PermanentError, StepContext
from infra.db.models import InboxEntry, OutboxMessage
from infra.db.outbox import outbox_rows, publish_outbox, recorded_result
from infra.settings import Settings

CHANGES = (
    "one-session",
    "publish-from-memory",
    "coalesced-mark",
    "no-pre-ping",
    "no-barrier",
    "no-thread-hop",
    "core-inserts",
)

INBOX_TABLE = cast(Table, InboxEntry.__table__)
OUTBOX_TABLE = cast(Table, OutboxMessage.__table__)


class PublishedMarker:
    """Marks outbox rows published in batches; the mark needs no fsync (see module doc)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, interval: float = 0.05
    ) -> None:
        self._sessionmaker = sessionmaker
        self._interval = interval
        self._pending: list[uuid.UUID] = []

    def add(self, event_ids: Sequence[uuid.UUID]) -> None:
        self._pending.extend(event_ids)

    async def flush(self) -> None:
        ids, self._pending = self._pending, []
        if not ids:
            return
        async with self._sessionmaker.begin() as session:
            await session.execute(text("SET LOCAL synchronous_commit = off"))
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.event_id.in_(ids))
                .where(OutboxMessage.published_at.is_(None))
                .values(published_at=datetime.now(UTC))
            )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            with contextlib.suppress(Exception):
                await self.flush()


class ProposedConsumerApp(ConsumerApp):
    """`ConsumerApp` with the selected `CHANGES` applied."""

    def __init__(
        self,
        process: str,
        *,
        settings: Settings,
        specs: Sequence[ConsumerSpec],
        changes: frozenset[str],
    ) -> None:
        unknown = changes - set(CHANGES)
        if unknown:
            raise ValueError(f"unknown changes {sorted(unknown)}; choose from {list(CHANGES)}")
        super().__init__(process, settings=settings, specs=specs)
        self.changes = changes
        self.marker: PublishedMarker | None = None

    async def start(self) -> None:
        if "no-pre-ping" in self.changes:
            # Startup hooks run after the engine exists and before the first message arrives.
            self.on_startup.insert(0, self._disable_pre_ping)
        await super().start()
        if "coalesced-mark" in self.changes:
            assert self.sessionmaker is not None
            self.marker = PublishedMarker(self.sessionmaker)
            self._background.append(asyncio.create_task(self.marker.run(), name="outbox-marker"))
            # Shutdown hooks run after the broker stopped and before the engine is disposed.
            self.on_shutdown.append(self.marker.flush)

    async def _disable_pre_ping(self) -> None:
        assert self.engine is not None
        self.engine.pool._pre_ping = False

    def _subscribe(self, spec: ConsumerSpec) -> None:
        if not {"no-barrier", "no-thread-hop"} & self.changes:
            super()._subscribe(spec)
            return
        assert self.broker is not None
        broker = self.broker
        concurrency = self.settings.consumer.concurrency
        subscriber = broker.subscriber(
            spec.subjects[0],
            stream=JStream(spec.stream.name, declare=False),
            durable=spec.durable,
            pull_sub=PullSub(batch_size=concurrency, timeout=1.0),
            max_workers=concurrency if "no-barrier" in self.changes else 1,
            ack_policy=AckPolicy.MANUAL,
            title=spec.durable,
            description=spec.description,
        )

        if "no-thread-hop" in self.changes:
            # No parameter to inject: FastStream resolves a `NatsMessage` parameter with a
            # synchronous context lookup that fast_depends runs in a worker thread.
            async def on_message_from_context() -> None:
                message: NatsMessage = broker.context.get_local("message")
                await self.process_message(spec, message.raw_message)

            subscriber(on_message_from_context)
        else:

            async def on_message(message: NatsMessage) -> None:
                await self.process_message(spec, message.raw_message)

            subscriber(on_message)

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
            outcome = await self._step(spec, msg, event, handler, delivery, bound)
        except PermanentError as exc:
            await self._dead_letter(spec, msg, f"permanent: {exc}", delivery, None)
            return "dead_letter"
        except Exception as exc:
            if delivery >= spec.max_deliver:
                await self._dead_letter(
                    spec,
                    msg,
                    f"failed {delivery} times, last: {type(exc).__name__}: {exc}",
                    delivery,
                    None,
                )
                return "dead_letter"
            await msg.nak(delay=self._backoff(delivery))
            return "retry"
        finally:
            heartbeat.cancel()
        await msg.ack()
        return outcome

    async def _step(
        self,
        spec: ConsumerSpec,
        msg: Msg,
        event: Event,
        handler: Handler,
        delivery: int,
        bound: structlog.stdlib.BoundLogger,
    ) -> str:
        """Like `ConsumerApp._run_step` plus the publish; returns the outcome label."""
        assert self.sessionmaker is not None and self.publisher is not None
        one_session = "one-session" in self.changes
        recorded: list[uuid.UUID] | None = None
        if not one_session:
            async with self.sessionmaker() as session:
                recorded = await recorded_result(session, spec.durable, event.event_id)
        emitted: list[Event] = []
        rows: list[dict[str, Any]] = []
        core = "core-inserts" in self.changes
        inbox: Table | type[InboxEntry] = INBOX_TABLE if core else InboxEntry
        outbox: Table | type[OutboxMessage] = OUTBOX_TABLE if core else OutboxMessage
        try:
            async with self.sessionmaker() as session, session.begin():
                if one_session:
                    recorded = await recorded_result(session, spec.durable, event.event_id)
                if recorded is None:
                    ctx = StepContext(spec.durable, session, bound, delivery, msg)
                    emitted = runtime._as_list(await handler(ctx, event))
                    rows = outbox_rows(emitted)
                    await session.execute(
                        insert(inbox).values(
                            consumer=spec.durable,
                            event_id=event.event_id,
                            result_event_ids=[str(e.event_id) for e in emitted],
                        )
                    )
                    if rows:
                        await session.execute(insert(outbox), rows)
        except IntegrityError:
            async with self.sessionmaker() as session:
                if await recorded_result(session, spec.durable, event.event_id) is not None:
                    return "duplicate"
            raise
        if recorded is not None:
            await publish_outbox(self.sessionmaker, self.publisher, recorded)
            bound.info("step.duplicate")
            return "duplicate"
        bound.info("step.done", emitted=[e.TYPE for e in emitted])
        with contextlib.suppress(Exception):
            # Left unpublished, the rows are picked up by the relay; the step is done either way.
            await self._publish(rows)
        return "ok"

    async def _publish(self, rows: list[dict[str, Any]]) -> None:
        assert self.sessionmaker is not None and self.publisher is not None
        ids = [r["event_id"] for r in rows]
        if not ids:
            return
        if "publish-from-memory" not in self.changes:
            async with self.sessionmaker() as session:
                stored = (
                    await session.execute(
                        select(
                            OutboxMessage.subject, OutboxMessage.payload, OutboxMessage.headers
                        ).where(OutboxMessage.event_id.in_(ids))
                    )
                ).all()
            rows = [{"subject": s, "payload": p, "headers": dict(h)} for s, p, h in stored]
        publisher = self.publisher
        await asyncio.gather(
            *(publisher.publish_raw(r["subject"], r["payload"], r["headers"]) for r in rows)
        )
        if self.marker is not None:
            self.marker.add(ids)
            return
        async with self.sessionmaker.begin() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.event_id.in_(ids))
                .where(OutboxMessage.published_at.is_(None))
                .values(published_at=datetime.now(UTC))
            )
