"""The publisher re-sends on a PubAck timeout with the same message id, and gives up in time."""

from __future__ import annotations

from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError, NotFoundError

from infra.bus.codec import encode
from infra.bus.publisher import JetStreamPublisher, PublishNotAcknowledged
from producers.intents import project_request


class SlowStream:
    """Answers the first `late` publishes with a timeout, as a busy server's late PubAck does."""

    def __init__(
        self,
        late: int,
        error: type[Exception] = NatsTimeoutError,
        info: type[Exception] = NatsTimeoutError,
    ) -> None:
        self.late = late
        self.error = error
        self.info = info  # what JetStream's API answers about the stream (none: a timeout)
        self.calls: list[dict[str, Any]] = []

    async def stream_info(self, name: str) -> None:
        raise self.info

    async def publish(self, subject: str, payload: bytes, **options: Any) -> None:
        self.calls.append({"subject": subject, "payload": payload, **options})
        if len(self.calls) <= self.late:
            raise self.error


async def test_a_late_acknowledgement_is_retried_with_the_same_message_id() -> None:
    stream = SlowStream(late=2)
    event = project_request("a todo app", user_id="42", source="cli")
    await JetStreamPublisher(stream, attempts=3, backoff=0).publish(event)  # type: ignore[arg-type]
    assert len(stream.calls) == 3
    ids = {call["headers"]["Nats-Msg-Id"] for call in stream.calls}
    assert ids == {encode(event)[2]["Nats-Msg-Id"]}
    assert len({call["payload"] for call in stream.calls}) == 1


async def test_the_timeout_is_raised_once_the_attempts_are_spent() -> None:
    stream = SlowStream(late=5)
    # Still a nats TimeoutError (callers that catch it keep working), with a message that says
    # what happened and what to check, which the CLI prints instead of a traceback.
    with pytest.raises(NatsTimeoutError) as raised:
        await JetStreamPublisher(stream, attempts=2, backoff=0).publish(  # type: ignore[arg-type]
            project_request("a todo app", user_id="42", source="cli")
        )
    assert isinstance(raised.value, PublishNotAcknowledged)
    assert "did not acknowledge intents.project.requested" in str(raised.value)
    assert "(2 attempts)" in str(raised.value)
    assert len(stream.calls) == 2


def answering(answers: bool) -> Any:
    async def alive() -> bool:
        return answers

    return alive


async def test_while_the_server_answers_a_slow_stream_is_waited_for_past_the_attempts() -> None:
    stream = SlowStream(late=5)
    waits: list[str] = []
    publisher = JetStreamPublisher(
        stream,  # type: ignore[arg-type]
        attempts=2,
        backoff=0,
        patience=60,
        alive=answering(True),
        on_wait=waits.append,
    )
    await publisher.publish(project_request("a todo app", user_id="42", source="cli"))
    assert len(stream.calls) == 6
    assert waits == [
        "stream INTENTS has not acknowledged intents.project.requested yet; trying again"
    ]


async def test_a_server_that_does_not_answer_ends_the_wait_after_the_attempts() -> None:
    stream = SlowStream(late=50)
    publisher = JetStreamPublisher(
        stream,  # type: ignore[arg-type]
        attempts=3,
        backoff=0,
        patience=60,
        alive=answering(False),
    )
    with pytest.raises(PublishNotAcknowledged, match="NATS does not answer"):
        await publisher.publish(project_request("a todo app", user_id="42", source="cli"))
    assert len(stream.calls) == 3


async def test_patience_runs_out_even_while_the_server_answers() -> None:
    stream = SlowStream(late=10**6)
    publisher = JetStreamPublisher(
        stream,  # type: ignore[arg-type]
        attempts=1,
        backoff=0,
        patience=0.05,
        alive=answering(True),
    )
    with pytest.raises(PublishNotAcknowledged, match="NATS answers, but JetStream stored nothing"):
        await publisher.publish(project_request("a todo app", user_id="42", source="cli"))
    assert len(stream.calls) > 1


async def test_a_stream_without_a_leader_is_waited_for_like_a_late_acknowledgement() -> None:
    """In a cluster electing a new stream leader, publishes get "no responders" for a while."""
    stream = SlowStream(late=3, error=NoStreamResponseError)
    publisher = JetStreamPublisher(
        stream,  # type: ignore[arg-type]
        attempts=2,
        backoff=0,
        patience=60,
        alive=answering(True),
    )
    await publisher.publish(project_request("a todo app", user_id="42", source="cli"))
    assert len(stream.calls) == 4


async def test_a_stream_that_never_answers_is_reported_as_missing_or_leaderless() -> None:
    stream = SlowStream(late=10**6, error=NoStreamResponseError)
    publisher = JetStreamPublisher(stream, attempts=2, backoff=0)  # type: ignore[arg-type]
    with pytest.raises(PublishNotAcknowledged, match="no stream answers on that subject"):
        await publisher.publish(project_request("a todo app", user_id="42", source="cli"))
    assert len(stream.calls) == 2


async def test_a_stream_that_does_not_exist_is_reported_at_once() -> None:
    stream = SlowStream(late=10**6, error=NoStreamResponseError, info=NotFoundError)
    publisher = JetStreamPublisher(
        stream,  # type: ignore[arg-type]
        attempts=4,
        backoff=0,
        patience=600,
        alive=answering(True),
    )
    with pytest.raises(PublishNotAcknowledged, match="stream INTENTS does not exist"):
        await publisher.publish(project_request("a todo app", user_id="42", source="cli"))
    assert len(stream.calls) == 1
