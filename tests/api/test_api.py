"""The HTTP API over a real uvicorn server, JetStream, PostgreSQL and OpenBao."""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from pathlib import Path

import httpx
import nats
import psycopg
import pytest
from nats.aio.client import Client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.topology import H_MSG_ID
from infra.bus.publisher import JetStreamPublisher
from infra.bus.topology import apply_topology
from infra.db.models import Base, ProjectState
from infra.db.session import make_engine, make_sessionmaker
from infra.settings import DatabaseSettings
from infra.stack.nats_server import NatsServer
from infra.vault import VaultClient
from producers.api.app import build_api
from producers.api.tokens import revoke_token
from tests.api.conftest import ApiUser, CapturedLogs, SeedProject, served


async def last_event(
    nc: Client, stream: str, subject: str
) -> tuple[dict[str, str], dict[str, object]]:
    msg = await nc.jsm().get_last_msg(stream, subject)
    return dict(msg.headers or {}), json.loads(msg.data or b"{}")


async def test_requests_without_a_valid_token_are_refused_with_the_reason(
    http: httpx.AsyncClient, alice: ApiUser, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    missing = await http.get("/projects")
    assert missing.status_code == 401
    assert "missing credentials" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"

    foreign = await http.get("/projects", headers={"Authorization": "Bearer ghp_abcdef123456"})
    assert foreign.status_code == 401
    assert "not an orchestrator API token" in foreign.json()["detail"]

    unknown = await http.get(
        "/projects", headers={"Authorization": f"Bearer orch_{secrets.token_urlsafe(32)}"}
    )
    assert unknown.status_code == 401
    assert "unknown API token" in unknown.json()["detail"]

    assert (await http.get("/projects", headers=alice.headers)).status_code == 200
    await revoke_token(sessionmaker, "alice-laptop")
    revoked = await http.get("/projects", headers=alice.headers)
    assert revoked.status_code == 401
    assert "'alice-laptop' was revoked" in revoked.json()["detail"]

    # Liveness and metrics need no token; the refusals above are counted.
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    metrics = (await http.get("/metrics")).text
    refusals = 'request_duration_seconds_count{method="GET",route="/projects",status="401"}'
    assert f"orchestrator_api_{refusals}" in metrics


async def test_creating_a_project_publishes_the_intent_and_answers_202(
    http: httpx.AsyncClient, base_url: str, alice: ApiUser, nc: Client
) -> None:
    response = await http.post(
        "/projects", json={"description": "  A URL shortener with stats  "}, headers=alice.headers
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status_url"] == f"{base_url}/projects/{body['project_id']}"
    assert response.headers["Location"] == body["status_url"]
    headers, event = await last_event(nc, "INTENTS", "intents.project.requested")
    assert event["project_id"] == body["project_id"]
    assert event["correlation_id"] == body["flow_id"]
    assert headers[H_MSG_ID] == event["event_id"]
    assert event["user_id"] == alice.user_id == "api:alice"
    assert event["source"] == "api"
    assert event["description"] == "A URL shortener with stats"


async def test_bad_requests_get_422_with_the_reason(
    http: httpx.AsyncClient, alice: ApiUser
) -> None:
    too_long = await http.post("/projects", json={"description": "x" * 8001}, headers=alice.headers)
    assert too_long.status_code == 422
    assert "has 8001 characters; the limit is 8000" in too_long.json()["detail"][0]["msg"]

    empty = await http.post("/projects", json={"description": "   "}, headers=alice.headers)
    assert empty.status_code == 422
    assert "description is empty" in empty.json()["detail"][0]["msg"]

    missing = await http.post("/projects", json={}, headers=alice.headers)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "description"]


async def test_a_user_sees_their_own_projects_and_nobody_elses(
    http: httpx.AsyncClient, alice: ApiUser, bob: ApiUser, seed_project: SeedProject
) -> None:
    project = await seed_project(
        alice.user_id, state=ProjectState.BUILDING, timeline=("requested via api", "spec ready")
    )
    bobs = await seed_project(bob.user_id, slug="bobs-api")

    for ref in (str(project.id), str(project.id)[:8], "todo-api"):
        own = await http.get(f"/projects/{ref}", headers=alice.headers)
        assert own.status_code == 200, ref
        detail = own.json()
        assert detail["id"] == str(project.id)
    assert detail["state"] == "building"
    assert detail["offline"] is True
    assert detail["error"] is None
    assert [t["summary"] for t in detail["timeline"]] == ["requested via api", "spec ready"]

    other = await http.get(f"/projects/{project.id}", headers=bob.headers)
    assert other.status_code == 404
    assert "you have no project" in other.json()["detail"]
    for ref in (str(bobs.id), "bobs-api"):  # by id or slug, someone else's is not found
        assert (await http.get(f"/projects/{ref}", headers=alice.headers)).status_code == 404

    listed = (await http.get("/projects", headers=alice.headers)).json()["projects"]
    assert [p["id"] for p in listed] == [str(project.id)]


async def test_an_answer_is_accepted_only_while_a_question_is_open(
    http: httpx.AsyncClient, alice: ApiUser, bob: ApiUser, seed_project: SeedProject, nc: Client
) -> None:
    building = await seed_project(alice.user_id, state=ProjectState.BUILDING, slug="busy")
    refused = await http.post(
        f"/projects/{building.id}/answers", json={"answer": "FastAPI"}, headers=alice.headers
    )
    assert refused.status_code == 409
    assert "is building: no question is waiting" in refused.json()["detail"]

    waiting = await seed_project(alice.user_id, state=ProjectState.AWAITING_ANSWER, slug="asks")
    assert (
        await http.post("/projects/asks/answers", json={"answer": "x"}, headers=bob.headers)
    ).status_code == 404
    accepted = await http.post(
        "/projects/asks/answers", json={"answer": "Use SQLite"}, headers=alice.headers
    )
    assert accepted.status_code == 202
    headers, event = await last_event(nc, "INTENTS", "intents.project.answered")
    assert event["project_id"] == str(waiting.id)
    assert event["correlation_id"] == str(waiting.flow_id)
    assert event["answer"] == "Use SQLite"
    assert event["user_id"] == alice.user_id
    assert headers[H_MSG_ID] == event["event_id"]


async def test_archive_is_published_once_per_project(
    http: httpx.AsyncClient, alice: ApiUser, seed_project: SeedProject, nc: Client
) -> None:
    project = await seed_project(alice.user_id, state=ProjectState.ACTIVE)
    response = await http.post(
        f"/projects/{project.id}/archive", json={"reason": "done with it"}, headers=alice.headers
    )
    assert response.status_code == 202
    _, event = await last_event(nc, "INTENTS", "intents.project.archive")
    assert event["project_id"] == str(project.id)
    assert event["reason"] == "done with it"

    archived = await seed_project(alice.user_id, state=ProjectState.ARCHIVED, slug="old")
    again = await http.post(f"/projects/{archived.id}/archive", headers=alice.headers)
    assert again.status_code == 409
    assert "already archived" in again.json()["detail"]


async def test_a_secret_goes_to_vault_and_nowhere_else(
    http: httpx.AsyncClient,
    alice: ApiUser,
    bob: ApiUser,
    seed_project: SeedProject,
    nc: Client,
    root_vault: VaultClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    captured_logs: CapturedLogs,
) -> None:
    project = await seed_project(alice.user_id, state=ProjectState.BUILDING)
    value = f"tg-{secrets.token_hex(16)}"

    stored = await http.put(
        f"/projects/{project.id}/secrets/TELEGRAM_BOT_TOKEN",
        json={"value": value},
        headers=alice.headers,
    )

    assert stored.status_code == 204
    assert stored.content == b""
    path = f"projects/{project.id}/TELEGRAM_BOT_TOKEN"
    assert await root_vault.read_secret(path) == {"value": value}
    headers, event = await last_event(nc, "PROJECT", "project.secret.stored")
    assert event["project_id"] == str(project.id)
    assert event["name"] == "TELEGRAM_BOT_TOKEN"
    assert event["vault_path"] == path
    assert headers[H_MSG_ID] == event["event_id"]

    # Refusals never echo the value back.
    lowercase = await http.put(
        f"/projects/{project.id}/secrets/bot_token", json={"value": value}, headers=alice.headers
    )
    assert lowercase.status_code == 422
    assert lowercase.json()["detail"][0]["loc"] == ["path", "name"]
    extra = await http.put(
        f"/projects/{project.id}/secrets/OTHER",
        json={"value": value, "note": value},
        headers=alice.headers,
    )
    assert extra.status_code == 422
    foreign = await http.put(
        f"/projects/{project.id}/secrets/OTHER", json={"value": value}, headers=bob.headers
    )
    assert foreign.status_code == 404
    for response in (stored, lowercase, extra, foreign):
        assert value not in response.text

    msg = await nc.jsm().get_last_msg("PROJECT", "project.secret.stored")
    assert value.encode() not in (msg.data or b"")
    assert "TELEGRAM_BOT_TOKEN" in captured_logs.rendered.getvalue()  # the capture works
    assert value not in captured_logs.text()
    async with sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            rows = await session.execute(text(f'SELECT t::text FROM "{table.name}" t'))
            assert all(value not in row for (row,) in rows), table.name


async def test_the_openapi_document_describes_the_endpoints_and_the_bearer_scheme(
    http: httpx.AsyncClient,
) -> None:
    document = (await http.get("/openapi.json")).json()
    assert set(document["paths"]) >= {
        "/projects",
        "/projects/{ref}",
        "/projects/{ref}/answers",
        "/projects/{ref}/secrets/{name}",
        "/projects/{ref}/archive",
        "/healthz",
    }
    assert document["components"]["securitySchemes"]["ApiToken"]["scheme"] == "bearer"
    request = document["components"]["schemas"]["ProjectRequest"]
    assert request["properties"]["description"]["description"].startswith("What the service")


async def test_an_unreachable_bus_gives_503_and_asks_to_try_again(
    tmp_path: Path,
    sessionmaker: async_sessionmaker[AsyncSession],
    api_vault: VaultClient,
    alice: ApiUser,
) -> None:
    with NatsServer(tmp_path / "nats") as server:
        await apply_topology(server.url)
        client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        server.stop()
        try:
            app = build_api(
                JetStreamPublisher(client.jetstream(), timeout=1.0, attempts=1),
                sessionmaker,
                api_vault,
                jetstream=client.jetstream(),
            )
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://api"
            ) as http:
                response = await http.post(
                    "/projects", json={"description": "a todo app"}, headers=alice.headers
                )
        finally:
            # nats-py's close while it is reconnecting trips over the dead socket.
            with contextlib.suppress(ConnectionResetError):
                await client.close()
    assert response.status_code == 503
    assert "try again" in response.json()["detail"]
    assert response.headers["Retry-After"] == "5"


@pytest.mark.parametrize("name", ["A" * 65, "1ABC", "WITH-DASH"])
async def test_secret_names_must_be_variable_names(
    http: httpx.AsyncClient, alice: ApiUser, name: str
) -> None:
    response = await http.put(
        f"/projects/{uuid.uuid4()}/secrets/{name}", json={"value": "v" * 10}, headers=alice.headers
    )
    assert response.status_code == 422


async def test_a_request_sent_again_with_its_idempotency_key_names_the_same_project(
    http: httpx.AsyncClient,
    alice: ApiUser,
    bob: ApiUser,
    nc: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async def stored() -> int:
        return (await nc.jsm().stream_info("INTENTS")).state.messages

    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"description": "A URL shortener with stats"}
    first = await http.post("/projects", json=body, headers=alice.headers | key)
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    count = await stored()

    # The client lost the answer and sends it again; meanwhile its quota was set to 0, which
    # does not refuse a retry of a request it already admitted.
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE users SET projects_per_day = 0 WHERE id = :id"), {"id": alice.user_id}
        )
    again = await http.post("/projects", json=body, headers=alice.headers | key)
    assert again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await stored() == count  # the same event id: the stream kept one copy
    _, event = await last_event(nc, "INTENTS", "intents.project.requested")
    assert event["project_id"] == first.json()["project_id"]

    other = await http.post(
        "/projects", json={"description": "A different service"}, headers=alice.headers | key
    )
    assert other.status_code == 422
    assert "already used for a different request" in other.json()["detail"]

    # Keys belong to their user: bob's identical key is a request of his own.
    bobs = await http.post("/projects", json=body, headers=bob.headers | key)
    assert bobs.status_code == 202
    assert bobs.json()["project_id"] != first.json()["project_id"]

    bad = await http.post(
        "/projects", json=body, headers=alice.headers | {"Idempotency-Key": "has spaces"}
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_a_request_that_waits_too_long_for_a_lock_is_answered_503_and_can_be_sent_again(
    nc: Client,
    api_vault: VaultClient,
    database_url: str,
    alice: ApiUser,
) -> None:
    """A lock held past `lock_timeout` (a migration, a long transaction) refuses the request
    with 503 and Retry-After instead of hanging or failing with 500; the same request with its
    Idempotency-Key goes through once the lock is gone, and names one project."""
    settings = DatabaseSettings(url=database_url, lock_timeout_seconds=0.3)
    engine = make_engine(database_url, pool_size=2, options=settings.session_options())
    app = build_api(
        JetStreamPublisher.from_client(nc),
        make_sessionmaker(engine),
        api_vault,
        jetstream=nc.jetstream(),
    )
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"description": "A URL shortener with stats"}
    try:
        async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
            with psycopg.connect(database_url.replace("+psycopg", "")) as holder:
                holder.execute("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE")
                busy = await http.post("/projects", json=body, headers=alice.headers | key)
                holder.rollback()
            assert busy.status_code == 503, busy.text
            assert busy.headers["Retry-After"]
            assert "send the request again" in busy.json()["detail"]
            again = await http.post("/projects", json=body, headers=alice.headers | key)
            assert again.status_code == 202, again.text
            assert "Idempotent-Replayed" not in again.headers
    finally:
        await engine.dispose()
