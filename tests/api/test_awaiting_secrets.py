"""`GET /projects/{ref}` of a deploy waiting for secrets names them, over the real API server."""

from __future__ import annotations

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import Project, ProjectState
from tests.api.conftest import ApiUser, SeedProject


async def test_a_waiting_project_lists_the_secrets_it_waits_for(
    http: httpx.AsyncClient,
    alice: ApiUser,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    project = await seed_project(
        alice.user_id,
        state=ProjectState.AWAITING_SECRETS,
        timeline=("deploy waits for secrets: TELEGRAM_BOT_TOKEN",),
    )
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Project)
            .where(Project.id == project.id)
            .values(missing_secrets=["TELEGRAM_BOT_TOKEN"])
        )

    detail = (await http.get(f"/projects/{project.id}", headers=alice.headers)).json()

    assert detail["state"] == "awaiting_secrets"
    assert detail["missing_secrets"] == ["TELEGRAM_BOT_TOKEN"]
    assert detail["timeline"][-1]["summary"] == "deploy waits for secrets: TELEGRAM_BOT_TOKEN"
    # The documented way out is the endpoint that stores the secret.
    document = (await http.get("/openapi.json")).json()
    described = document["components"]["schemas"]["ProjectDetail"]["properties"]
    assert "PUT /projects/{ref}/secrets/{name}" in described["missing_secrets"]["description"]
