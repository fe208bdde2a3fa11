"""`POST /projects/{ref}/redeploy|restart|rollback|retry`: request → response and the intent on
the stream (real NATS, PostgreSQL and the API app), and the plain refusals the rules give."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from nats.aio.client import Client
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import Project, ProjectState
from tests.api.conftest import ApiUser, SeedProject
from tests.api.test_api import last_event

LIVE, PREVIOUS = "b" * 40, "a" * 40


async def _record(
    sessionmaker: async_sessionmaker[AsyncSession], project_id: uuid.UUID, **values: object
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Project).where(Project.id == project_id).values(**values))


async def test_each_operation_publishes_its_intent_and_answers_with_its_id(
    http: httpx.AsyncClient,
    alice: ApiUser,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
    nc: Client,
) -> None:
    live = await seed_project(alice.user_id, state=ProjectState.ACTIVE, slug="ops-live")
    await _record(
        sessionmaker, live.id, code_commit=LIVE, live_commit=LIVE, previous_commit=PREVIOUS
    )
    failed = await seed_project(alice.user_id, state=ProjectState.FAILED, slug="ops-failed")

    for ref, path, subject in (
        ("ops-live", "redeploy", "intents.project.redeploy"),
        ("ops-live", "restart", "intents.project.restart"),
        (str(live.id)[:8], "rollback", "intents.project.rollback"),
        ("ops-failed", "retry", "intents.project.retry"),
    ):
        response = await http.post(f"/projects/{ref}/{path}", headers=alice.headers)
        assert response.status_code == 202, (path, response.text)
        body = response.json()
        headers, event = await last_event(nc, "INTENTS", subject)
        assert body["event_id"] == event["event_id"] == headers["Nats-Msg-Id"]
        assert event["user_id"] == alice.user_id
        expected = failed.id if path == "retry" else live.id
        assert body["project_id"] == event["project_id"] == str(expected)
        assert response.headers["Location"].endswith(f"/projects/{expected}")

    named = await http.post(
        "/projects/ops-live/redeploy", json={"commit": PREVIOUS}, headers=alice.headers
    )
    assert named.status_code == 202
    _, event = await last_event(nc, "INTENTS", "intents.project.redeploy")
    assert event["commit"] == PREVIOUS
    short = await http.post(
        "/projects/ops-live/redeploy", json={"commit": "abc123"}, headers=alice.headers
    )
    assert short.status_code == 422


async def test_illegal_operations_are_refused_with_the_reason(
    http: httpx.AsyncClient,
    alice: ApiUser,
    bob: ApiUser,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
    nc: Client,
) -> None:
    live = await seed_project(alice.user_id, state=ProjectState.ACTIVE, slug="ops-once")
    await _record(sessionmaker, live.id, code_commit=LIVE, live_commit=LIVE)
    building = await seed_project(alice.user_id, state=ProjectState.BUILDING, slug="ops-build")
    published_before = (await nc.jsm().stream_info("INTENTS")).state.last_seq

    rollback = await http.post(f"/projects/{live.id}/rollback", headers=alice.headers)
    assert rollback.status_code == 409
    assert "no previous release" in rollback.json()["detail"]

    retry = await http.post(f"/projects/{live.id}/retry", headers=alice.headers)
    assert retry.status_code == 409
    assert "not failed" in retry.json()["detail"]

    redeploy = await http.post(f"/projects/{building.id}/redeploy", headers=alice.headers)
    assert redeploy.status_code == 409
    assert "only a live project can be redeployed" in redeploy.json()["detail"]

    # Someone else's project does not exist for bob.
    foreign = await http.post(f"/projects/{live.id}/restart", headers=bob.headers)
    assert foreign.status_code == 404
    assert "you have no project" in foreign.json()["detail"]

    unauthenticated = await http.post(f"/projects/{live.id}/restart")
    assert unauthenticated.status_code == 401
    # A refusal publishes nothing.
    assert (await nc.jsm().stream_info("INTENTS")).state.last_seq == published_before


async def test_an_operation_sent_again_with_its_idempotency_key_runs_once(
    http: httpx.AsyncClient,
    alice: ApiUser,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
    nc: Client,
) -> None:
    live = await seed_project(alice.user_id, state=ProjectState.ACTIVE, slug="ops-keyed")
    await _record(
        sessionmaker, live.id, code_commit=LIVE, live_commit=LIVE, previous_commit=PREVIOUS
    )

    async def last_seq() -> int:
        return (await nc.jsm().stream_info("INTENTS")).state.last_seq

    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await http.post("/projects/ops-keyed/rollback", headers=alice.headers | key)
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    published = await last_seq()

    # The rollback is under way (its previous release is now the live one): a plain second
    # rollback is refused, but the client's retry of the first is answered as it was, and the
    # same event id is published, which the stream drops.
    await _record(
        sessionmaker,
        live.id,
        live_commit=PREVIOUS,
        previous_commit=None,
        operation="rollback",
        operation_started_at=datetime.now(UTC),
    )
    plain = await http.post("/projects/ops-keyed/rollback", headers=alice.headers)
    assert plain.status_code == 409
    again = await http.post("/projects/ops-keyed/rollback", headers=alice.headers | key)
    assert again.status_code == 202, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await last_seq() == published

    # The key stands for that rollback only.
    other = await http.post("/projects/ops-keyed/restart", headers=alice.headers | key)
    assert other.status_code == 422
    assert "already used for a different request" in other.json()["detail"]

    # A refused request does not use its key up: sent again once allowed, it goes through.
    refused_key = {"Idempotency-Key": str(uuid.uuid4())}
    refused = await http.post("/projects/ops-keyed/restart", headers=alice.headers | refused_key)
    assert refused.status_code == 409
    await _record(sessionmaker, live.id, operation=None, operation_started_at=None)
    allowed = await http.post("/projects/ops-keyed/restart", headers=alice.headers | refused_key)
    assert allowed.status_code == 202, allowed.text
    assert "Idempotent-Replayed" not in allowed.headers
    assert await last_seq() == published + 1
