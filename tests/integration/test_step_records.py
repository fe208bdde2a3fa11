"""A single step's records, written the lean way, against a real PostgreSQL.

`begin_step` and `commit_step` (`infra/db/outbox.py`) carry the runtime's one-message path in
two round trips by going under the session to psycopg, on a connection held between steps
(`infra/db/step_connection.py`). These tests check that the shortcut keeps the guarantees the
ORM path gave: the handler's writes, the inbox row and the outbox rows commit together or not
at all (also when the handler wrote nothing and the records commit by themselves), a step that
emits nothing is still recorded, and the lookup finds what a first run emitted.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts import events as ev
from infra.db.outbox import HandledEvent, OutboxRow, begin_step, commit_step
from infra.db.session import make_engine, make_sessionmaker
from infra.db.step_connection import StepConnection
from producers.intents import project_request

from .conftest import sql

CONSUMER = "records-test"


@pytest.fixture
async def engine(migrated_db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_db, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def held(engine: AsyncEngine) -> AsyncIterator[StepConnection]:
    """A pull loop's held connection, as the runtime keeps it between steps."""
    connection = StepConnection(engine)
    yield connection
    await connection.release()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


def request(description: str) -> ev.ProjectRequested:
    return project_request(description, user_id="cli:test", source="cli")


async def run_step(
    held: StepConnection,
    event_id: uuid.UUID,
    emitted: list[OutboxRow],
    *,
    writes: bool = True,
) -> list[uuid.UUID] | None:
    """A step as the runtime runs it: lookup, the handler's own write, records and commit."""
    connection, driver = await held.acquire()
    recorded = await begin_step(driver, CONSUMER, event_id)
    if recorded is not None:
        return recorded
    async with async_sessionmaker(bind=connection, expire_on_commit=False)() as session:
        if writes:
            await session.execute(
                text("INSERT INTO effects (event_id, replica, description) VALUES (:e, 'r', 'd')"),
                {"e": event_id},
            )
        await commit_step(session, driver, CONSUMER, HandledEvent(event_id, tuple(emitted)))
    return None


async def test_a_step_commits_its_effect_inbox_row_and_outbox_rows_together(
    held: StepConnection, migrated_db: str
) -> None:
    event_id = uuid.uuid4()
    emitted = [OutboxRow.of(request("first")), OutboxRow.of(request("second"))]
    assert await run_step(held, event_id, emitted) is None

    assert await run_step(held, event_id, []) == [row.event_id for row in emitted]
    assert sql(migrated_db, "SELECT count(*) FROM effects") == [(1,)]
    stored = sql(migrated_db, "SELECT event_id, subject, payload, headers FROM outbox")
    assert {r[0]: (r[1], r[2], r[3]) for r in stored} == {
        row.event_id: (row.subject, row.payload, row.headers) for row in emitted
    }


async def test_a_step_that_emits_nothing_is_recorded(
    held: StepConnection, migrated_db: str
) -> None:
    event_id = uuid.uuid4()
    assert await run_step(held, event_id, []) is None
    assert await run_step(held, event_id, []) == []
    assert sql(migrated_db, "SELECT count(*) FROM outbox") == [(0,)]


async def test_a_step_that_wrote_nothing_commits_its_one_record_by_itself(
    held: StepConnection, migrated_db: str
) -> None:
    """No transaction was opened, so the records' one statement commits alone; the
    connection is back in transaction mode afterwards, so the next step's writes are atomic."""
    first, second = uuid.uuid4(), uuid.uuid4()
    [row] = [OutboxRow.of(request("only"))]
    assert await run_step(held, first, [row], writes=False) is None
    assert await run_step(held, first, []) == [row.event_id]
    assert sql(migrated_db, "SELECT count(*) FROM effects") == [(0,)]
    assert sql(migrated_db, "SELECT event_id, payload FROM outbox") == [(row.event_id, row.payload)]
    assert held.driver.autocommit is False
    assert await run_step(held, second, [OutboxRow.of(request("next"))]) is None
    [(inbox_xmin,)] = sql(migrated_db, f"SELECT xmin::text FROM inbox WHERE event_id = '{second}'")
    assert sql(migrated_db, "SELECT xmin::text FROM effects") == [(inbox_xmin,)]


async def test_a_failed_record_leaves_nothing_behind(
    held: StepConnection, sessions: async_sessionmaker[AsyncSession], migrated_db: str
) -> None:
    """Another replica committed the same event meanwhile: this run's effect is rolled back."""
    event_id = uuid.uuid4()
    sql(
        migrated_db,
        f"INSERT INTO inbox (consumer, event_id, result_event_ids, processed_at)"
        f" VALUES ('{CONSUMER}', '{event_id}', '[]', now()) RETURNING 1",
    )
    connection, driver = await held.acquire()
    async with sessions(bind=connection) as session:
        await session.execute(
            text("INSERT INTO effects (event_id, replica, description) VALUES (:e, 'r', 'd')"),
            {"e": event_id},
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            await commit_step(
                session,
                driver,
                CONSUMER,
                HandledEvent(event_id, (OutboxRow.of(request("lost")),)),
            )
    assert sql(migrated_db, "SELECT count(*) FROM effects") == [(0,)]
    assert sql(migrated_db, "SELECT count(*) FROM outbox") == [(0,)]
