"""Publishing events: always JetStream (acknowledged by the stream), always de-duplicated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from contracts.envelope import Event
from contracts.topology import stream_for_subject
from infra.bus.codec import encode


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
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self._js = js
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff

    @classmethod
    def from_client(cls, nc: Client, *, attempts: int = 4) -> JetStreamPublisher:
        return cls(nc.jetstream(), attempts=attempts)

    async def publish(self, event: Event) -> None:
        subject, body, headers = encode(event)
        await self.publish_raw(subject, body, headers)

    async def publish_raw(self, subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish, and publish again when the acknowledgement does not come in time.

        A PubAck timeout does not say whether the stream stored the message (a busy server
        stores it and answers late). Re-sending the same `Nats-Msg-Id` is safe: the stream's
        duplicate window drops the second copy and acknowledges it as a duplicate.
        """
        stream = stream_for_subject(subject).name
        started = time.monotonic()
        for attempt in range(1, self._attempts + 1):
            try:
                await self._js.publish(
                    subject, body, timeout=self._timeout, stream=stream, headers=dict(headers)
                )
                return
            except NatsTimeoutError as exc:
                if attempt == self._attempts:
                    raise PublishNotAcknowledged(
                        f"stream {stream} did not acknowledge {subject} in "
                        f"{time.monotonic() - started:.0f}s ({attempt} attempts): NATS is down "
                        "or overloaded; it may still have stored the event, so check before "
                        "sending it again"
                    ) from exc
                await asyncio.sleep(min(self._backoff * 2**attempt, 5.0))

    async def publish_many(self, events: Iterable[Event]) -> None:
        await asyncio.gather(*(self.publish(event) for event in events))
