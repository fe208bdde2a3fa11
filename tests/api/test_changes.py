"""`POST /projects/{ref}/changes` as a client meets it: a real server over JetStream and
PostgreSQL. The door refuses at once what the coordinator would refuse, with the reason."""

from __future__ import annotations

import json

import httpx
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.topology import H_MSG_ID
from infra.db.models import ProjectRevision, ProjectState, RevisionStatus
from tests.api.conftest import ApiUser, SeedProject

AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"


async def last_change(nc: Client) -> tuple[dict[str, str], dict[str, object]]:
    msg = await nc.jsm().get_last_msg("INTENTS", "intents.project.change")
    return dict(msg.headers or {}), json.loads(msg.data or b"{}")


async def test_a_change_to_a_live_project_is_published_and_answers_202(
    http: httpx.AsyncClient, alice: ApiUser, seed_project: SeedProject, nc: Client
) -> None:
    project = await seed_project(alice.user_id, state=ProjectState.ACTIVE, slug="ledger")
    response = await http.post(
        "/projects/ledger/changes",
        json={"change": "add an endpoint that returns totals per month"},
        headers=alice.headers,
    )
    assert response.status_code == 202
    assert response.json()["project_id"] == str(project.id)
    assert response.headers["Location"].endswith(f"/projects/{project.id}")
    headers, event = await last_change(nc)
    assert event["project_id"] == str(project.id)
    assert event["correlation_id"] == str(project.flow_id)
    assert event["change"] == "add an endpoint that returns totals per month"
    assert (event["user_id"], event["source"]) == (alice.user_id, "api")
    assert headers[H_MSG_ID] == event["event_id"]


async def test_changes_are_refused_with_the_reason(
    http: httpx.AsyncClient,
    alice: ApiUser,
    bob: ApiUser,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await seed_project(alice.user_id, state=ProjectState.ACTIVE, slug="live")
    building = await seed_project(alice.user_id, state=ProjectState.BUILDING, slug="busy")

    async def change(ref: str, who: ApiUser, text: str = "add contacts") -> httpx.Response:
        return await http.post(
            f"/projects/{ref}/changes", json={"change": text}, headers=who.headers
        )

    not_yours = await change("live", bob)
    assert not_yours.status_code == 404
    assert "you have no project 'live'" in not_yours.json()["detail"]

    not_live = await change("busy", alice)
    assert not_live.status_code == 409
    assert "busy is building: only a live project" in not_live.json()["detail"]

    leak = await change("live", alice, f"use the key {AWS_KEY}")
    assert leak.status_code == 422
    assert AWS_KEY not in leak.text

    empty = await change("live", alice, "   ")
    assert empty.status_code == 422
    assert "the change is empty" in empty.text

    live = await seed_project(alice.user_id, state=ProjectState.ACTIVE, slug="changing")
    async with sessionmaker() as session, session.begin():
        session.add(
            ProjectRevision(
                project_id=live.id,
                number=2,
                status=RevisionStatus.BUILDING,
                change="add notes",
                answers=[],
                summary="",
            )
        )
    in_flight = await change("changing", alice)
    assert in_flight.status_code == 409
    assert (
        "revision 2 of project changing is still in progress (building)"
        in (in_flight.json()["detail"])
    )
    assert building.state == ProjectState.BUILDING


async def test_an_answer_reaches_a_question_about_a_change(
    http: httpx.AsyncClient,
    alice: ApiUser,
    seed_project: SeedProject,
    sessionmaker: async_sessionmaker[AsyncSession],
    nc: Client,
) -> None:
    """While the analyst asks about a change the project stays active; the answer route
    accepts the answer all the same."""
    project = await seed_project(alice.user_id, state=ProjectState.ACTIVE, slug="asking")
    async with sessionmaker() as session, session.begin():
        session.add(
            ProjectRevision(
                project_id=project.id,
                number=2,
                status=RevisionStatus.AWAITING_ANSWER,
                change="add a command",
                answers=[],
                summary="",
            )
        )
    response = await http.post(
        "/projects/asking/answers", json={"answer": "/stats"}, headers=alice.headers
    )
    assert response.status_code == 202
    msg = await nc.jsm().get_last_msg("INTENTS", "intents.project.answered")
    assert json.loads(msg.data or b"{}")["answer"] == "/stats"
