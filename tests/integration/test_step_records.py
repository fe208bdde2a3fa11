"""A single step's records, written the lean way, against a real PostgreSQL.

`begin_step` and `commit_step` (`infra/db/outbox.py`) carry the runtime's one-message path in
two round trips by going under the session to psycopg. These tests check that the shortcut
keeps the guarantees the ORM path gave: the handler's writes, the inbox row and the outbox
rows commit together or not at all, a step that emits nothing is still recorded, and the
lookup finds what a first run emitted.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import events as ev
from infra.db.outbox import HandledEvent, OutboxRow, begin_step, commit_step
from infra.db.session import make_engine, make_sessionmaker
from producers.intents import project_request

from .conftest import sql

CONSUMER = "records-test"


@pytest.fixture
async def sessions(migrated_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_db, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


def request(description: str) -> ev.ProjectRequested:
    return project_request(description, user_id="cli:test", source="cli")


async def run_step(
    sessions: async_sessionmaker[AsyncSession], event_id: uuid.UUID, emitted: list[OutboxRow]
) -> list[uuid.UUID] | None:
    """A step as the runtime runs it: lookup, the handler's own write, records and commit."""
    async with sessions() as session:
        recorded = await begin_step(session, CONSUMER, event_id)
        if recorded is not None:
            return recorded
        await session.execute(
            text("INSERT INTO effects (event_id, replica, description) VALUES (:e, 'r', 'd')"),
            {"e": event_id},
        )
        await commit_step(session, CONSUMER, HandledEvent(event_id, tuple(emitted)))
    return None


async def test_a_step_commits_its_effect_inbox_row_and_outbox_rows_together(
    sessions: async_sessionmaker[AsyncSession], migrated_db: str
) -> None:
    event_id = uuid.uuid4()
    emitted = [OutboxRow.of(request("first")), OutboxRow.of(request("second"))]
    assert await run_step(sessions, event_id, emitted) is None

    assert await run_step(sessions, event_id, []) == [row.event_id for row in emitted]
    assert sql(migrated_db, "SELECT count(*) FROM effects") == [(1,)]
    stored = sql(migrated_db, "SELECT event_id, subject, payload, headers FROM outbox")
    assert {r[0]: (r[1], r[2], r[3]) for r in stored} == {
        row.event_id: (row.subject, row.payload, row.headers) for row in emitted
    }


async def test_a_step_that_emits_nothing_is_recorded(
    sessions: async_sessionmaker[AsyncSession], migrated_db: str
) -> None:
    event_id = uuid.uuid4()
    assert await run_step(sessions, event_id, []) is None
    assert await run_step(sessions, event_id, []) == []
    assert sql(migrated_db, "SELECT count(*) FROM outbox") == [(0,)]


async def test_a_failed_record_leaves_nothing_behind(
    sessions: async_sessionmaker[AsyncSession], migrated_db: str
) -> None:
    """Another replica committed the same event meanwhile: this run's effect is rolled back."""
    event_id = uuid.uuid4()
    sql(
        migrated_db,
        f"INSERT INTO inbox (consumer, event_id, result_event_ids, processed_at)"
        f" VALUES ('{CONSUMER}', '{event_id}', '[]', now()) RETURNING 1",
    )
    async with sessions() as session:
        await session.execute(
            text("INSERT INTO effects (event_id, replica, description) VALUES (:e, 'r', 'd')"),
            {"e": event_id},
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            await commit_step(
                session, CONSUMER, HandledEvent(event_id, (OutboxRow.of(request("lost")),))
            )
    assert sql(migrated_db, "SELECT count(*) FROM effects") == [(0,)]
    assert sql(migrated_db, "SELECT count(*) FROM outbox") == [(0,)]
