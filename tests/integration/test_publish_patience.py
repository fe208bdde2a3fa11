"""A publisher waits for a stream that is slow to store while the server answers, not longer.

Against a real nats-server: the INTENTS stream is taken away while a core subscriber keeps the
subject answered by nobody (so the publish times out, as a stalled stream's does), and given
back once the publisher has reported its first timeout; a stream that is simply gone is
reported at once; then the server itself is stopped (SIGSTOP), which the publisher notices by
its unanswered PING and reports at once.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from nats.aio.client import Client

from infra.bus.publisher import JetStreamPublisher, PublishNotAcknowledged
from infra.bus.topology import apply_topology
from infra.stack.nats_server import NatsServer
from producers.intents import project_request

from .conftest import wait_for


async def test_a_stalled_stream_is_waited_for_while_the_server_answers(
    fresh_nats: NatsServer, nc: Client
) -> None:
    jsm = nc.jsm()
    await jsm.delete_stream("INTENTS")
    silent = await nc.subscribe("intents.>")  # takes the request and never answers
    waits: list[str] = []
    publisher = JetStreamPublisher.from_client(
        nc, timeout=0.5, attempts=2, patience=120, on_wait=waits.append
    )
    event = project_request("a todo app", user_id="42", source="cli")

    async def give_the_stream_back() -> None:
        await wait_for(lambda: waits, timeout=60)
        # The stream first: with nobody on the subject a publish would hear "no responders",
        # and a stream the API says is missing ends the wait at once (the next test).
        await apply_topology(fresh_nats.url)
        await silent.unsubscribe()

    await asyncio.gather(publisher.publish(event), give_the_stream_back())
    assert len(waits) == 1
    stored = await jsm.get_last_msg("INTENTS", "intents.project.requested")
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == str(event.event_id)


async def test_a_missing_stream_is_reported_at_once_whatever_the_patience(
    fresh_nats: NatsServer, nc: Client
) -> None:
    await nc.jsm().delete_stream("INTENTS")
    publisher = JetStreamPublisher.from_client(nc, timeout=5, attempts=4, patience=3600)
    # Within a minute, against an hour of patience: the API's answer decided it.
    with pytest.raises(PublishNotAcknowledged, match="stream INTENTS does not exist"):
        await asyncio.wait_for(
            publisher.publish(project_request("a todo app", user_id="42", source="cli")), 60
        )
    await apply_topology(fresh_nats.url)


async def test_a_server_that_stops_answering_is_reported_without_waiting_out_the_patience(
    fresh_nats: NatsServer, nc: Client
) -> None:
    publisher = JetStreamPublisher.from_client(nc, timeout=0.5, attempts=2, patience=3600)
    pid = fresh_nats.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(PublishNotAcknowledged, match="NATS does not answer"):
            await publisher.publish(project_request("a todo app", user_id="42", source="cli"))
    finally:
        os.kill(pid, signal.SIGCONT)
