"""Publishing events: always JetStream (acknowledged by the stream), always de-duplicated."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Protocol

from nats.aio.client import Client
from nats.js import JetStreamContext

from contracts.envelope import Event
from contracts.topology import stream_for_subject
from infra.bus.codec import encode


class Publisher(Protocol):
    async def publish(self, event: Event) -> None: ...


class JetStreamPublisher:
    """Publishes with `Nats-Msg-Id` = event id and waits for the stream's acknowledgement.

    A core NATS publish (no `stream=`) is never used: it is fire-and-forget and loses events
    when nobody listens, the failure mode this system was built to remove.
    """

    def __init__(self, js: JetStreamContext, *, timeout: float = 10.0) -> None:
        self._js = js
        self._timeout = timeout

    @classmethod
    def from_client(cls, nc: Client) -> JetStreamPublisher:
        return cls(nc.jetstream())

    async def publish(self, event: Event) -> None:
        subject, body, headers = encode(event)
        await self.publish_raw(subject, body, headers)

    async def publish_raw(self, subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        await self._js.publish(
            subject,
            body,
            timeout=self._timeout,
            stream=stream_for_subject(subject).name,
            headers=dict(headers),
        )

    async def publish_many(self, events: Iterable[Event]) -> None:
        await asyncio.gather(*(self.publish(event) for event in events))
