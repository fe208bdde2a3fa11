"""Commands the coordinator derives from a scheduler tick belong to their project's flow.

A tick carries the scheduler's one constant flow id. The analyst uses the flow id of a
`SpecRequested` as its LangGraph thread, so a retry that inherited the tick's flow id would put
every timed-out project into one shared thread, and the second project would get the first
one's spec back. These tests time two projects out in the same tick, over the real bus and
PostgreSQL, and then let the real (offline) analyst answer every request.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client

from consumers.analyst.app import build_app as build_analyst
from consumers.analyst.checkpointer import postgres_checkpointer
from consumers.analyst.graph import build_graph
from contracts import events as ev
from contracts.spec import ServiceKind
from contracts.topology import PROJECT
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.intents import project_request
from producers.scheduler.ticks import TICKS_FLOW, tick_for

from .conftest import sql
from .test_coordinator import coordinator, sql_exec, stored, until_stored

__all__ = ["coordinator"]  # the fixture, used by name below

NOTES = "an http api for notes"
BOT = "a telegram bot for reminders"


async def _time_out_two_projects(
    nc: Client, migrated_db: str
) -> tuple[dict[uuid.UUID, uuid.UUID], ev.SchedulerTick, list[ev.SpecRequested]]:
    """Two projects whose spec step is overdue, one tick: (project -> flow, tick, retries)."""
    publisher = JetStreamPublisher.from_client(nc)
    notes = project_request(NOTES, user_id="cli:ana", source="cli")
    bot = project_request(BOT, user_id="cli:bo", source="cli")
    await publisher.publish(notes)
    await publisher.publish(bot)
    await until_stored(nc, PROJECT.name, ev.SpecRequested.TYPE, 2)
    past = datetime.now(UTC) - timedelta(hours=1)
    sql_exec(migrated_db, f"UPDATE projects SET step_deadline = '{past.isoformat()}'")
    tick = tick_for("timeouts", datetime.now(UTC), 60)
    await publisher.publish(tick)
    requests = await until_stored(nc, PROJECT.name, ev.SpecRequested.TYPE, 4)
    retries = [
        ev.SpecRequested.model_validate(r)
        for r in requests
        if r["causation_id"] == str(tick.event_id)
    ]
    flows = {
        uuid.UUID(str(project_id)): uuid.UUID(str(flow_id))
        for project_id, flow_id in sql(migrated_db, "SELECT id, flow_id FROM projects")
    }
    assert set(flows) == {notes.project_id, bot.project_id}
    assert flows == {notes.project_id: notes.correlation_id, bot.project_id: bot.correlation_id}
    return flows, tick, retries


@pytest.mark.usefixtures("coordinator")
async def test_each_timeout_retry_carries_its_own_projects_flow_id(
    nc: Client, migrated_db: str
) -> None:
    flows, tick, retries = await _time_out_two_projects(nc, migrated_db)

    assert sorted(r.project_id for r in retries) == sorted(flows)
    for retry in retries:
        assert retry.correlation_id == flows[retry.project_id]
        assert retry.correlation_id != tick.correlation_id
    # The progress notices of the retried step are in the project's flow too.
    notices = [
        n
        for n in await stored(nc, "NOTIFY", ev.NotificationRequested.TYPE)
        if n["causation_id"] == str(tick.event_id)
    ]
    for notice in notices:
        assert notice["correlation_id"] == str(flows[uuid.UUID(str(notice["project_id"]))])


@pytest.mark.usefixtures("coordinator")
async def test_two_timed_out_projects_keep_their_own_spec_and_thread(
    nc: Client, migrated_db: str, fresh_nats: NatsServer
) -> None:
    flows, _, retries = await _time_out_two_projects(nc, migrated_db)
    descriptions = {r.project_id: r.description for r in retries}

    # The analyst only now answers: each project's original request and its retry.
    app = build_analyst(
        Settings(
            nats={"url": fresh_nats.url},
            database={"url": migrated_db},
            llm={"provider": "offline"},
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    try:
        specs = await until_stored(nc, PROJECT.name, ev.SpecReady.TYPE, 4)
    finally:
        stop.set()
        await task

    expected_kind = {pid: ServiceKind.HTTP for pid, d in descriptions.items() if d == NOTES}
    expected_kind |= {pid: ServiceKind.TELEGRAM_BOT for pid, d in descriptions.items() if d == BOT}
    for raw in specs:
        ready = ev.SpecReady.model_validate(raw)
        assert ready.correlation_id == flows[ready.project_id]
        assert ready.spec.primary_kind == expected_kind[ready.project_id], (
            f"project {ready.project_id} ({descriptions[ready.project_id]!r}) got the spec "
            f"{ready.spec.name!r} of another project"
        )

    # One checkpoint thread per project, holding that project's description; none for the tick.
    async with postgres_checkpointer(migrated_db) as saver:
        graph = build_graph(None, saver)
        for project_id, flow in flows.items():
            state = await graph.aget_state({"configurable": {"thread_id": str(flow)}})
            assert state.values["description"] == descriptions[project_id]
        shared = await graph.aget_state({"configurable": {"thread_id": str(TICKS_FLOW)}})
        assert not shared.values
