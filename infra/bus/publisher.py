"""Publishing events: always JetStream (acknowledged by the stream), always de-duplicated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError, NotFoundError

from contracts.envelope import Event
from contracts.topology import stream_for_subject
from infra.bus.codec import encode
from infra.bus.connection import on_reconnect


class PublishNotAcknowledged(NatsTimeoutError):
    """Every attempt to publish timed out: the stream never said it stored the event."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "nats: timeout"


class Publisher(Protocol):
    async def publish(self, event: Event) -> None: ...


class JetStreamPublisher:
    """Publishes with `Nats-Msg-Id` = event id and waits for the stream's acknowledgement.

    A core NATS publish (no `stream=`) is never used: it is fire-and-forget and loses events
    when nobody listens, the failure mode this system was built to remove.

    `attempts` publishes are always made. With `patience` (seconds) and a way to ask whether
    the server still answers (`alive`), a publisher keeps trying past them for as long as the
    server answers a PING and `patience` has not run out: a stream that is slow to store (a
    loaded host, a stalled disk) is waited for, a server that is gone is reported at once.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        patience: float = 0.0,
        alive: Callable[[], Awaitable[bool]] | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self._js = js
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._patience = patience
        self._alive = alive
        self._on_wait = on_wait
        #: The deadlines of the publishes waiting for an acknowledgement right now.
        self._in_flight: set[asyncio.Timeout] = set()

    def connection_restored(self) -> None:
        """The client has reconnected: acknowledgements awaited on the lost connection will not
        come (the server restarted, or the client is on another node), so every publish waiting
        for one sends again now instead of waiting out its timeout. The same `Nats-Msg-Id` is
        sent, so a copy the stream did store is acknowledged as a duplicate."""
        if self._in_flight:
            now = asyncio.get_running_loop().time()
            for deadline in self._in_flight:
                deadline.reschedule(now)

    @classmethod
    def from_client(
        cls,
        nc: Client,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        patience: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> JetStreamPublisher:
        async def alive() -> bool:
            return await server_answers(nc)

        publisher = cls(
            nc.jetstream(),
            timeout=timeout,
            attempts=attempts,
            patience=patience,
            alive=alive,
            on_wait=on_wait,
        )
        on_reconnect(nc, publisher.connection_restored)
        return publisher

    async def publish(self, event: Event) -> None:
        subject, body, headers = encode(event)
        await self.publish_raw(subject, body, headers)

    async def publish_raw(self, subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish, and publish again when the acknowledgement does not come in time.

        A PubAck timeout does not say whether the stream stored the message (a busy server
        stores it and answers late). Re-sending the same `Nats-Msg-Id` is safe: the stream's
        duplicate window drops the second copy and acknowledges it as a duplicate.

        "No responders" is retried the same way. In a cluster only the stream's leader listens
        on its subjects, so while the replicas elect a new one (a node died: a few seconds)
        every publish is answered at once with no responders; giving up then lost the event
        (tests/integration/test_nats_cluster_faults.py). A stream that does not exist answers
        the same; when JetStream's API says so, the publisher gives up at once.
        """
        stream = stream_for_subject(subject).name
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                if await self._acknowledged(subject, body, stream, headers):
                    return
                continue  # the connection came back meanwhile: sent again at once
            except (NatsTimeoutError, NoStreamResponseError) as exc:
                waited = time.monotonic() - started
                if isinstance(exc, NoStreamResponseError) and await self._missing(stream):
                    raise PublishNotAcknowledged(
                        f"stream {stream} does not exist, so {subject} was not stored: start "
                        "the stack again (`orchestrator up` creates the streams) or apply the "
                        "deployment's topology"
                    ) from exc
                if attempt >= self._attempts:
                    reason = await self._why_not_wait_longer(waited)
                    if reason and isinstance(exc, NoStreamResponseError):
                        reason = (
                            "no stream answers on that subject (the stream is missing, or its "
                            "cluster lost the quorum to elect a leader)"
                        )
                    if reason:
                        raise PublishNotAcknowledged(
                            f"stream {stream} did not acknowledge {subject} in {waited:.0f}s "
                            f"({attempt} attempts): {reason}; it may still have stored the "
                            "event, so check before sending it again"
                        ) from exc
                if attempt == 1 and self._on_wait is not None:
                    self._on_wait(
                        f"stream {stream} has not acknowledged {subject} yet; trying again"
                    )
                await asyncio.sleep(min(self._backoff * 2**attempt, 5.0))

    async def _acknowledged(
        self, subject: str, body: bytes, stream: str, headers: Mapping[str, str]
    ) -> bool:
        """One publish: True once acknowledged, False when the connection was restored before
        the acknowledgement came; raises what JetStream's publish raises."""
        # No deadline of its own (nats-py's `timeout` is the one): `connection_restored` sets
        # it to now. A task per publish would cost the hot path more than this.
        deadline = asyncio.timeout(None)
        try:
            async with deadline:
                self._in_flight.add(deadline)
                try:
                    await self._js.publish(
                        subject, body, timeout=self._timeout, stream=stream, headers=dict(headers)
                    )
                finally:
                    self._in_flight.discard(deadline)
        except TimeoutError:
            if deadline.expired():
                return False
            raise
        return True

    async def _missing(self, stream: str) -> bool:
        """True only when JetStream's API answers that `stream` does not exist (an API that
        does not answer, during an election or without the permission, says nothing)."""
        try:
            await self._js.stream_info(stream)
        except NotFoundError:
            return True
        except (NatsError, TimeoutError):
            return False
        return False

    async def _why_not_wait_longer(self, waited: float) -> str | None:
        """None while the server answers and patience lasts, else why the publisher gives up."""
        if self._alive is None:
            return "NATS is down or overloaded"
        if not await self._alive():
            return "NATS does not answer (is the server running and reachable?)"
        if waited >= self._patience:
            return (
                "NATS answers, but JetStream stored nothing in that time (an overloaded "
                "server or a stalled disk: see the server's log)"
            )
        return None

    async def publish_many(self, events: Iterable[Event]) -> None:
        await asyncio.gather(*(self.publish(event) for event in events))


#: How long a PING may go unanswered before the server counts as gone.
PING_TIMEOUT_SECONDS = 5


async def server_answers(nc: Client) -> bool:
    """True when the server answers a PING in time (the connection is alive)."""
    try:
        await nc.flush(timeout=PING_TIMEOUT_SECONDS)
    except (NatsError, TimeoutError):
        return False
    return True
