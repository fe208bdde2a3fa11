"""The dead-letter stream: park a message with its error, list it, show it, replay it.

A dead letter keeps the original bytes and headers, plus headers saying which consumer gave up,
why, after how many deliveries, and where the original sat. Replaying re-publishes the original
body on its original subject with a fresh `Nats-Msg-Id` (the original id may still be inside
the duplicate window); the consumer's inbox is keyed by the event id in the body, so a replay
of an event that did get handled meanwhile is still a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamManager
from nats.js.errors import NotFoundError

from contracts.topology import (
    DLQ,
    H_DLQ_CONSUMER,
    H_DLQ_DELIVERIES,
    H_DLQ_ERROR,
    H_DLQ_FAILED_AT,
    H_DLQ_STREAM,
    H_DLQ_STREAM_SEQ,
    H_DLQ_SUBJECT,
    H_MSG_ID,
    ConsumerSpec,
    dlq_subject,
)
from infra.bus.publisher import JetStreamPublisher

_MAX_HEADER = 2000


async def dead_letter(
    publisher: JetStreamPublisher, spec: ConsumerSpec, msg: Msg, error: str, delivery: int
) -> None:
    seq = msg.metadata.sequence.stream if msg.metadata else 0
    headers = dict(msg.headers or {})
    headers.update(
        {
            # One dead letter per original message and consumer, however often this runs.
            H_MSG_ID: f"dlq:{spec.durable}:{spec.stream.name}:{seq}",
            H_DLQ_ERROR: error.replace("\r", " ").replace("\n", " ")[:_MAX_HEADER],
            H_DLQ_CONSUMER: spec.durable,
            H_DLQ_SUBJECT: msg.subject,
            H_DLQ_STREAM: spec.stream.name,
            H_DLQ_STREAM_SEQ: str(seq),
            H_DLQ_DELIVERIES: str(delivery),
            H_DLQ_FAILED_AT: datetime.now(UTC).isoformat(),
        }
    )
    await publisher.publish_raw(dlq_subject(spec.durable), msg.data, headers)


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    consumer: str
    subject: str
    error: str
    deliveries: int
    failed_at: str
    headers: dict[str, str]
    data: bytes

    @property
    def original_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if not k.startswith("Orch-Dlq-")}


def _as_dead_letter(seq: int, headers: dict[str, str] | None, data: bytes | None) -> DeadLetter:
    h = dict(headers or {})
    return DeadLetter(
        seq=seq,
        consumer=h.get(H_DLQ_CONSUMER, "?"),
        subject=h.get(H_DLQ_SUBJECT, "?"),
        error=h.get(H_DLQ_ERROR, ""),
        deliveries=int(h.get(H_DLQ_DELIVERIES, "0") or 0),
        failed_at=h.get(H_DLQ_FAILED_AT, ""),
        headers=h,
        data=data or b"",
    )


class DeadLetterQueue:
    """Operator access to the DLQ stream by sequence number."""

    def __init__(self, jsm: JetStreamManager, publisher: JetStreamPublisher) -> None:
        self._jsm = jsm
        self._publisher = publisher

    async def list(self, consumer: str | None = None, limit: int = 100) -> list[DeadLetter]:
        info = await self._jsm.stream_info(DLQ.name)
        letters: list[DeadLetter] = []
        seq = info.state.first_seq
        while seq and seq <= info.state.last_seq and len(letters) < limit:
            letter = await self.get(seq)
            seq += 1
            if letter is None or (consumer and letter.consumer != consumer):
                continue
            letters.append(letter)
        return letters

    async def get(self, seq: int) -> DeadLetter | None:
        try:
            raw = await self._jsm.get_msg(DLQ.name, seq)
        except NotFoundError:
            return None
        return _as_dead_letter(seq, raw.headers, raw.data)

    async def replay(self, seq: int) -> DeadLetter:
        """Re-publish the original and remove the dead letter."""
        letter = await self.get(seq)
        if letter is None:
            raise LookupError(f"no dead letter with sequence {seq}; see `orchestrator dlq list`")
        headers = letter.original_headers
        headers[H_MSG_ID] = f"{headers.get(H_MSG_ID, 'event')}:replay:{seq}"
        await self._publisher.publish_raw(letter.subject, letter.data, headers)
        await self._jsm.delete_msg(DLQ.name, seq)
        return letter
