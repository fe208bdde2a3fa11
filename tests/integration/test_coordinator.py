"""The coordinator's state machine over the real bus: every other step is played by the test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from consumers.coordinator.app import build_app
from contracts import events as ev
from contracts.envelope import Event
from contracts.spec import ProjectSpec, ServiceKind
from contracts.topology import DEPLOY, NOTIFY, PROJECT
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.intents import clarification_answer, project_request
from producers.scheduler.ticks import tick_for

from .conftest import sql, wait_for

SPEC = ProjectSpec(
    name="Expense tracker",
    slug="expense-tracker",
    summary="Tracks expenses",
    kinds=(ServiceKind.HTTP,),
)


#: The people of these tests: the coordinator refuses intents of anyone not in `users`.
MEMBERS = ("cli:ana", "cli:bo", "cli:cy", "cli:dee")


def add_user(
    db_url: str,
    user_id: str,
    *,
    role: str = "member",
    status: str = "active",
    chat_id: int | None = None,
    projects_per_day: int | None = None,
    builds_at_once: int | None = None,
) -> None:
    """Register a person the way the doors do (bot invite, API token, CLI operator)."""
    import psycopg

    from .conftest import plain_url

    with psycopg.connect(plain_url(db_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, display_name, chat_id, role, status, projects_per_day,"
            " builds_at_once, created_at) VALUES (%s, '', %s, %s, %s, %s, %s, now())",
            (user_id, chat_id, role, status, projects_per_day, builds_at_once),
        )


@pytest.fixture
async def coordinator(fresh_nats: NatsServer, migrated_db: str, nc: Client) -> AsyncIterator[None]:
    for user_id in MEMBERS:
        add_user(migrated_db, user_id)
    app = build_app(Settings(nats={"url": fresh_nats.url}, database={"url": migrated_db}))
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    yield
    stop.set()
    await task


async def stored(nc: Client, stream: str, subject: str) -> list[dict[str, object]]:
    """Every message stored on `subject` so far, decoded."""
    sub = await nc.jetstream().pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=5),
    )
    found: list[dict[str, object]] = []
    try:
        while True:
            batch = await sub.fetch(100, timeout=0.3)
            found.extend(json.loads(m.data) for m in batch)
    except TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    return found


def outcome(cls: type[Event], cause: Event, **payload: Any) -> Event:
    return cause.derive(cls, actor="test-step", **payload)


async def until_stored(
    nc: Client, stream: str, subject: str, count: int
) -> list[dict[str, object]]:
    for _ in range(100):
        found = await stored(nc, stream, subject)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{subject}: expected {count} messages, got {len(found)}")


@pytest.mark.usefixtures("coordinator")
async def test_project_lifecycle_with_question_join_and_timeline(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request = project_request("a bot", user_id="cli:ana", source="cli")
    await publisher.publish(request)
    (spec_request,) = await until_stored(nc, PROJECT.name, ev.SpecRequested.TYPE, 1)
    assert spec_request["description"] == "a bot"
    cause = ev.SpecRequested.model_validate(spec_request)

    await publisher.publish(
        outcome(
            ev.ClarificationAsked,
            cause,
            project_id=request.project_id,
            question="What should the bot do?",
            offline=True,
        )
    )
    await wait_for(
        lambda: sql(migrated_db, "SELECT state FROM projects")[0][0] == "awaiting_answer"
    )
    answer = clarification_answer(
        request.project_id,
        request.correlation_id,
        "track expenses",
        user_id="cli:ana",
        source="cli",
    )
    await publisher.publish(answer)
    requests = await until_stored(nc, PROJECT.name, ev.SpecRequested.TYPE, 2)
    assert requests[1]["answers"] == ["track expenses"]

    second = ev.SpecRequested.model_validate(requests[1])
    await publisher.publish(
        outcome(ev.SpecReady, second, project_id=request.project_id, spec=SPEC, offline=True)
    )
    (provision,) = await until_stored(nc, PROJECT.name, ev.ProvisionRequested.TYPE, 1)
    (repo,) = await until_stored(nc, PROJECT.name, ev.RepoRequested.TYPE, 1)
    assert provision["slug"] == "expense-tracker"

    repo_cmd = ev.RepoRequested.model_validate(repo)
    await publisher.publish(
        outcome(
            ev.RepoCreated,
            repo_cmd,
            project_id=request.project_id,
            repo_name="expense-tracker",
            clone_url="git://127.0.0.1/expense-tracker.git",
            commit="a" * 40,
        )
    )
    (code,) = await until_stored(nc, PROJECT.name, ev.CodeRequested.TYPE, 1)
    code_cmd = ev.CodeRequested.model_validate(code)
    provision_cmd = ev.ProvisionRequested.model_validate(provision)
    # Both halves of the join arrive at once: exactly one deploy command must follow.
    await asyncio.gather(
        publisher.publish(
            outcome(
                ev.CodeGenerated,
                code_cmd,
                project_id=request.project_id,
                commit="b" * 40,
                mode="offline",
                tests_passed=3,
            )
        ),
        publisher.publish(
            outcome(
                ev.ResourcesAllocated,
                provision_cmd,
                project_id=request.project_id,
                server_name="local",
                host="127.0.0.1",
                port=20001,
            )
        ),
    )
    (deploy,) = await until_stored(nc, DEPLOY.name, ev.DeployRequested.TYPE, 1)
    assert (deploy["commit"], deploy["port"]) == ("b" * 40, 20001)
    deploy_cmd = ev.DeployRequested.model_validate(deploy)
    await publisher.publish(
        outcome(
            ev.DeploySucceeded,
            deploy_cmd,
            project_id=request.project_id,
            commit="b" * 40,
            release="r1",
            url="http://127.0.0.1:20001",
        )
    )
    await wait_for(lambda: sql(migrated_db, "SELECT state FROM projects")[0][0] == "active")
    await asyncio.sleep(0.5)
    assert len(await stored(nc, DEPLOY.name, ev.DeployRequested.TYPE)) == 1

    timeline = [
        row[0]
        for row in sql(
            migrated_db, "SELECT event_type FROM project_events ORDER BY occurred_at, id"
        )
    ]
    assert timeline == [
        ev.ProjectRequested.TYPE,
        ev.ClarificationAsked.TYPE,
        ev.ClarificationAnswered.TYPE,
        ev.SpecReady.TYPE,
        ev.RepoCreated.TYPE,
        *sorted([ev.CodeGenerated.TYPE, ev.ResourcesAllocated.TYPE], key=timeline.index),
        ev.DeploySucceeded.TYPE,
    ]
    notes = await until_stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE, 8)
    kinds = [n["kind"] for n in notes]
    assert "question" in kinds and kinds[-1] == "done"
    assert notes[-1]["text"] == "Expense tracker is live: http://127.0.0.1:20001"
    assert all(n["offline"] is True for n in notes)


@pytest.mark.usefixtures("coordinator")
async def test_failure_is_reported_and_final(nc: Client, migrated_db: str) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request = project_request("an http api for notes", user_id="cli:bo", source="cli")
    await publisher.publish(request)
    (spec_request,) = await until_stored(nc, PROJECT.name, ev.SpecRequested.TYPE, 1)
    await publisher.publish(
        outcome(
            ev.SpecFailed,
            ev.SpecRequested.model_validate(spec_request),
            project_id=request.project_id,
            reason="the provider refused",
        )
    )
    await wait_for(lambda: sql(migrated_db, "SELECT state FROM projects")[0][0] == "failed")
    notes = await until_stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE, 3)
    failure = [n for n in notes if n["kind"] == "failure"]
    assert failure and "the provider refused" in str(failure[0]["text"])
    assert (
        sql(migrated_db, "SELECT error FROM projects")[0][0] == "Spec failed: the provider refused"
    )


@pytest.mark.usefixtures("coordinator")
async def test_step_timeout_retries_then_fails(nc: Client, migrated_db: str) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request = project_request("an http api for notes", user_id="cli:cy", source="cli")
    await publisher.publish(request)
    await until_stored(nc, PROJECT.name, ev.SpecRequested.TYPE, 1)
    past = datetime.now(UTC) - timedelta(hours=1)
    for attempt in range(3):
        sql_exec(migrated_db, f"UPDATE projects SET step_deadline = '{past.isoformat()}'")
        tick = tick_for("timeouts", datetime.now(UTC) + timedelta(minutes=attempt), 60)
        await publisher.publish(tick)
        if attempt < 2:
            await until_stored(nc, PROJECT.name, ev.SpecRequested.TYPE, attempt + 2)
    await wait_for(lambda: sql(migrated_db, "SELECT state FROM projects")[0][0] == "failed")
    assert "timed out" in str(sql(migrated_db, "SELECT error FROM projects")[0][0])


def sql_exec(url: str, statement: str) -> None:
    import psycopg

    from .conftest import plain_url

    with psycopg.connect(plain_url(url), autocommit=True) as conn:
        conn.execute(statement)


async def drive_to_active(
    nc: Client, publisher: JetStreamPublisher, description: str, spec: ProjectSpec, port: int
) -> tuple[ev.ProjectRequested, ev.DeployRequested]:
    """Play every step's part for one project until the coordinator makes it active."""
    request = project_request(description, user_id="cli:dee", source="cli")
    await publisher.publish(request)
    specs = await until_found(nc, PROJECT.name, ev.SpecRequested.TYPE, request.project_id)
    await publisher.publish(
        outcome(
            ev.SpecReady,
            ev.SpecRequested.model_validate(specs),
            project_id=request.project_id,
            spec=spec,
            offline=True,
        )
    )
    repo = ev.RepoRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.RepoRequested.TYPE, request.project_id)
    )
    provision = ev.ProvisionRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.ProvisionRequested.TYPE, request.project_id)
    )
    await publisher.publish(
        outcome(
            ev.RepoCreated,
            repo,
            project_id=request.project_id,
            repo_name=repo.spec.slug,
            clone_url=f"git://127.0.0.1/{repo.spec.slug}.git",
            commit="a" * 40,
        )
    )
    code = ev.CodeRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.CodeRequested.TYPE, request.project_id)
    )
    await publisher.publish(
        outcome(
            ev.CodeGenerated,
            code,
            project_id=request.project_id,
            commit="b" * 40,
            mode="offline",
            tests_passed=1,
        )
    )
    await publisher.publish(
        outcome(
            ev.ResourcesAllocated,
            provision,
            project_id=request.project_id,
            server_name="local",
            host="127.0.0.1",
            port=port,
        )
    )
    deploy = ev.DeployRequested.model_validate(
        await until_found(nc, DEPLOY.name, ev.DeployRequested.TYPE, request.project_id)
    )
    await publisher.publish(
        outcome(
            ev.DeploySucceeded,
            deploy,
            project_id=request.project_id,
            commit="b" * 40,
            release="r1",
            url=f"http://127.0.0.1:{port}",
        )
    )
    return request, deploy


async def until_found(
    nc: Client, stream: str, subject: str, project_id: object
) -> dict[str, object]:
    for _ in range(100):
        for found in await stored(nc, stream, subject):
            if found["project_id"] == str(project_id):
                return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {subject} for project {project_id}")


@pytest.mark.usefixtures("coordinator")
async def test_same_slug_twice_gets_a_distinct_slug(nc: Client, migrated_db: str) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    first, _ = await drive_to_active(nc, publisher, "expenses one", SPEC, 20011)
    second, deploy = await drive_to_active(nc, publisher, "expenses two", SPEC, 20012)
    slugs = {row[0]: row[1] for row in sql(migrated_db, "SELECT id::text, slug FROM projects")}
    assert slugs[str(first.project_id)] == "expense-tracker"
    assert slugs[str(second.project_id)] == f"expense-tracker-{second.project_id.hex[:6]}"
    assert deploy.spec.slug == slugs[str(second.project_id)]


@pytest.mark.usefixtures("coordinator")
async def test_failed_redeploy_keeps_a_live_project_live(nc: Client, migrated_db: str) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request, deploy = await drive_to_active(nc, publisher, "notes", SPEC, 20013)
    await wait_for(lambda: sql(migrated_db, "SELECT state FROM projects")[0][0] == "active")
    redeploy = deploy.model_copy(update={"event_id": uuid.uuid4(), "commit": "c" * 40})
    await publisher.publish(
        outcome(
            ev.DeployFailed,
            redeploy,
            project_id=request.project_id,
            commit="c" * 40,
            reason="health check failed",
            rolled_back=True,
        )
    )
    await wait_for(lambda: sql(migrated_db, "SELECT error FROM projects")[0][0] is not None)
    state, error = sql(migrated_db, "SELECT state, error FROM projects")[0]
    assert state == "active"
    assert "previous release is still serving" in str(error)
    notes = await until_stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE, 1)
    assert notes[-1]["kind"] == "failure"
