"""The consumers check, not only the doors: forged and over-quota intents on a real bus.

Each test publishes events straight onto a real nats-server, as anything holding bus access
could, and watches the real coordinator (and the real runtime's dead-letter path) refuse what
the sender may not do: the project row stays as it was, the refusal is on the timeline, and the
actor is told when they are a known person.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from nats.aio.client import Client

from consumers.coordinator.app import build_app
from contracts import events as ev
from contracts.envelope import Event
from contracts.topology import DEPLOY, DEPLOYER, ENGINEER, NOTIFY, PROJECT
from infra.bus.dead_letter import DeadLetterQueue
from infra.bus.publisher import JetStreamPublisher
from infra.bus.runtime import ConsumerApp, StepContext
from infra.bus.topology import apply_consumers, with_concurrency
from infra.repo_urls import ForgeSettings
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.cli.commands import as_operator
from producers.cli.endpoints import Endpoints
from producers.intents import archive_request, clarification_answer, project_request, secret_stored

from .conftest import sql, wait_for
from .test_coordinator import (
    SPEC,
    add_user,
    outcome,
    sql_exec,
    stored,
    until_found,
    until_stored,
)

OWNER = "telegram:100"
INTRUDER = "telegram:666"
ADMIN = "cli:root"
FORGE = ForgeSettings(host="local", daemon_url="git://127.0.0.1:9418")


@pytest.fixture
async def coordinator(fresh_nats: NatsServer, migrated_db: str, nc: Client) -> AsyncIterator[None]:
    add_user(migrated_db, OWNER, chat_id=100)
    add_user(migrated_db, INTRUDER, chat_id=666)
    add_user(migrated_db, ADMIN, role="admin")
    add_user(migrated_db, "telegram:200", status="blocked", chat_id=200)
    add_user(migrated_db, "telegram:300", chat_id=300, projects_per_day=1)
    add_user(migrated_db, "telegram:400", chat_id=400, builds_at_once=1)
    settings = Settings(nats={"url": fresh_nats.url}, database={"url": migrated_db})
    app = build_app(settings, forge=FORGE)
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    yield
    stop.set()
    await task


def project_row(db: str, project_id: uuid.UUID) -> tuple[object, ...]:
    rows = sql(db, f"SELECT state, answers::text, version FROM projects WHERE id = '{project_id}'")
    assert rows, f"project {project_id} does not exist"
    return rows[0]


def timeline(db: str, project_id: uuid.UUID) -> list[tuple[object, ...]]:
    return sql(
        db,
        "SELECT event_type, summary FROM project_events "
        f"WHERE project_id = '{project_id}' ORDER BY occurred_at, id",
    )


async def notes_for(nc: Client, user_id: str, count: int) -> list[dict[str, object]]:
    """The notifications addressed to `user_id`, once at least `count` of them are stored."""
    for _ in range(100):
        found = [
            n
            for n in await stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE)
            if n["user_id"] == user_id
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} notifications for {user_id}, got {len(found)}")


async def awaiting_answer(
    nc: Client, publisher: JetStreamPublisher, db: str, user_id: str
) -> ev.ProjectRequested:
    """A project of `user_id` whose analyst asked a question."""
    request = project_request("a bot", user_id=user_id, source="telegram", chat_id=100)
    await publisher.publish(request)
    spec_request = await until_found(nc, PROJECT.name, ev.SpecRequested.TYPE, request.project_id)
    await publisher.publish(
        outcome(
            ev.ClarificationAsked,
            ev.SpecRequested.model_validate(spec_request),
            project_id=request.project_id,
            question="What should the bot do?",
            offline=True,
        )
    )
    await wait_for(lambda: project_row(db, request.project_id)[0] == "awaiting_answer")
    return request


@pytest.mark.usefixtures("coordinator")
async def test_a_forged_answer_changes_nothing_and_the_sender_is_told(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request = await awaiting_answer(nc, publisher, migrated_db, OWNER)
    before = project_row(migrated_db, request.project_id)

    forged = clarification_answer(
        request.project_id,
        request.correlation_id,
        "delete it all",
        user_id=INTRUDER,
        source="telegram",
    )
    await publisher.publish(forged)
    (told,) = await notes_for(nc, INTRUDER, 1)
    assert told["chat_id"] == 666 and told["kind"] == "failure"
    assert "may not answer for project" in str(told["text"])

    assert project_row(migrated_db, request.project_id) == before
    refusal = timeline(migrated_db, request.project_id)[-1]
    assert refusal[0] == ev.ClarificationAnswered.TYPE
    assert f"refused: {INTRUDER} may not answer for" in str(refusal[1])
    # The analyst was asked once, for the request; the forged answer asked it nothing.
    assert len(await stored(nc, PROJECT.name, ev.SpecRequested.TYPE)) == 1

    # The owner's own answer still goes through.
    await publisher.publish(
        clarification_answer(
            request.project_id,
            request.correlation_id,
            "track expenses",
            user_id=OWNER,
            source="telegram",
        )
    )
    await wait_for(lambda: project_row(migrated_db, request.project_id)[0] == "specifying")
    assert project_row(migrated_db, request.project_id)[1] == '["track expenses"]'


@pytest.mark.usefixtures("coordinator")
async def test_archive_by_a_stranger_or_nobody_is_refused_and_an_admin_may_archive(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request = await awaiting_answer(nc, publisher, migrated_db, OWNER)
    before = project_row(migrated_db, request.project_id)

    await publisher.publish(
        archive_request(request.project_id, request.correlation_id, "mine now", user_id=INTRUDER)
    )
    # An archive request from an old producer or a forger, naming nobody: never authorised.
    anonymous = ev.ProjectArchiveRequested(
        correlation_id=request.correlation_id, actor="api", project_id=request.project_id
    )
    await publisher.publish(anonymous)
    (told,) = await notes_for(nc, INTRUDER, 1)
    assert "may not archive project" in str(told["text"])
    await wait_for(lambda: len(timeline(migrated_db, request.project_id)) == 4)
    summaries = [str(row[1]) for row in timeline(migrated_db, request.project_id)[-2:]]
    assert any(s.startswith(f"refused: {INTRUDER} may not archive") for s in summaries)
    assert "refused: the request names no acting user" in summaries
    assert project_row(migrated_db, request.project_id) == before
    assert await stored(nc, PROJECT.name, ev.ProjectArchived.TYPE) == []

    await publisher.publish(
        archive_request(request.project_id, request.correlation_id, "cleanup", user_id=ADMIN)
    )
    (archived,) = await until_stored(nc, PROJECT.name, ev.ProjectArchived.TYPE, 1)
    assert archived["project_id"] == str(request.project_id)
    assert project_row(migrated_db, request.project_id)[0] == "archived"


@pytest.mark.usefixtures("coordinator")
async def test_a_secret_notice_is_recorded_for_the_owner_only(nc: Client, migrated_db: str) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request = await awaiting_answer(nc, publisher, migrated_db, OWNER)
    path = f"projects/{request.project_id}/API_TOKEN"
    await publisher.publish(
        secret_stored(
            request.project_id, request.correlation_id, "API_TOKEN", path, user_id=INTRUDER
        )
    )
    await publisher.publish(
        secret_stored(request.project_id, request.correlation_id, "API_TOKEN", path, user_id=OWNER)
    )
    await wait_for(lambda: len(timeline(migrated_db, request.project_id)) == 4)
    summaries = [str(row[1]) for row in timeline(migrated_db, request.project_id)[-2:]]
    assert f"secret API_TOKEN stored by {OWNER}" in summaries
    assert any(s.startswith(f"refused: {INTRUDER} may not store secret") for s in summaries)


@pytest.mark.usefixtures("coordinator")
async def test_unknown_and_blocked_users_are_refused(nc: Client, migrated_db: str) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    stranger = project_request("a bot", user_id="telegram:999", source="telegram", chat_id=999)
    blocked = project_request("a bot", user_id="telegram:200", source="telegram", chat_id=200)
    await publisher.publish(stranger)
    await publisher.publish(blocked)
    (told,) = await notes_for(nc, "telegram:200", 1)
    assert "telegram:200 is blocked" in str(told["text"]) and told["chat_id"] == 200
    await wait_for(lambda: len(timeline(migrated_db, stranger.project_id)) == 1)
    assert "not a user of this orchestrator" in str(timeline(migrated_db, stranger.project_id)[0])
    assert sql(migrated_db, "SELECT count(*) FROM projects")[0][0] == 0
    assert await stored(nc, PROJECT.name, ev.SpecRequested.TYPE) == []
    # Strangers are not messaged on the word of an event.
    assert [
        n
        for n in await stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE)
        if n["user_id"] == "telegram:999"
    ] == []


@pytest.mark.usefixtures("coordinator")
async def test_projects_over_the_daily_quota_are_refused(nc: Client, migrated_db: str) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    first = project_request("a bot", user_id="telegram:300", source="telegram", chat_id=300)
    await publisher.publish(first)
    await until_found(nc, PROJECT.name, ev.SpecRequested.TYPE, first.project_id)
    second = project_request("another bot", user_id="telegram:300", source="telegram")
    await publisher.publish(second)
    notes = await notes_for(nc, "telegram:300", 2)
    refusal = next(n for n in notes if n["kind"] == "failure")
    assert refusal["project_id"] == str(second.project_id)
    assert "quota is 1 new project(s) per day" in str(refusal["text"])
    assert refusal["chat_id"] == 300  # the chat the person is known by
    ((event_type, summary),) = timeline(migrated_db, second.project_id)
    assert event_type == ev.ProjectRequested.TYPE and "quota" in str(summary)
    assert sql(migrated_db, "SELECT count(*) FROM projects")[0][0] == 1


async def repo_ready(
    nc: Client, publisher: JetStreamPublisher, user_id: str, slug: str
) -> ev.ProjectRequested:
    """A project of `user_id` whose repository was just created."""
    request = project_request(f"{slug} service", user_id=user_id, source="telegram")
    await publisher.publish(request)
    spec_request = await until_found(nc, PROJECT.name, ev.SpecRequested.TYPE, request.project_id)
    spec = SPEC.model_copy(update={"slug": slug, "name": slug})
    await publisher.publish(
        outcome(
            ev.SpecReady,
            ev.SpecRequested.model_validate(spec_request),
            project_id=request.project_id,
            spec=spec,
            offline=True,
        )
    )
    repo = ev.RepoRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.RepoRequested.TYPE, request.project_id)
    )
    await publisher.publish(
        outcome(
            ev.RepoCreated,
            repo,
            project_id=request.project_id,
            repo_name=slug,
            clone_url=f"git://127.0.0.1/{slug}.git",
            commit="a" * 40,
        )
    )
    return request


async def code_requests_for(nc: Client, project_ids: Sequence[uuid.UUID]) -> set[str]:
    wanted = {str(p) for p in project_ids}
    found = await stored(nc, PROJECT.name, ev.CodeRequested.TYPE)
    return {str(c["project_id"]) for c in found} & wanted


@pytest.mark.usefixtures("coordinator")
async def test_builds_over_the_limit_wait_and_start_when_one_finishes(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    first = await repo_ready(nc, publisher, "telegram:400", "first-app")
    code = ev.CodeRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.CodeRequested.TYPE, first.project_id)
    )
    second = await repo_ready(nc, publisher, "telegram:400", "second-app")
    await wait_for(
        lambda: sql(
            migrated_db,
            f"SELECT build_queued_at IS NOT NULL FROM projects WHERE id = '{second.project_id}'",
        )[0][0]
    )
    notes = await notes_for(nc, "telegram:400", 1)
    assert any("queued: 1 builds ahead of you" in str(n["text"]) for n in notes)
    assert "queued: 1 builds ahead" in str(timeline(migrated_db, second.project_id)[-1][1])
    await asyncio.sleep(0.5)  # a wrongly emitted command would be stored by now
    assert await code_requests_for(nc, [second.project_id]) == set()

    await publisher.publish(
        outcome(
            ev.CodeGenerated,
            code,
            project_id=first.project_id,
            commit="b" * 40,
            mode="offline",
            tests_passed=1,
        )
    )
    started = ev.CodeRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.CodeRequested.TYPE, second.project_id)
    )
    assert started.base_commit == "a" * 40
    queued_at, deadline = sql(
        migrated_db,
        f"SELECT build_queued_at, step_deadline FROM projects WHERE id = '{second.project_id}'",
    )[0]
    assert queued_at is None and deadline is not None


async def progress_of(nc: Client, project_id: uuid.UUID, starts: str) -> str:
    """The text of the project's progress message that starts with `starts`."""
    for _ in range(300):
        for note in await stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE):
            text = str(note["text"])
            if note["project_id"] == str(project_id) and text.startswith(starts):
                return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"no progress message starting {starts!r} for {project_id}")


@pytest.mark.usefixtures("coordinator")
async def test_a_build_behind_the_engineers_busy_slots_is_told_how_many_are_ahead(
    nc: Client, migrated_db: str
) -> None:
    """The engineer's durable as its process applies it with concurrency 1: the first build
    takes the slot, so the second is told one build is ahead and the third two (one running,
    one waiting). Each person's own quota (5 at once) never holds them back."""
    add_user(migrated_db, "telegram:500", chat_id=500, builds_at_once=5)
    await apply_consumers(nc.jsm(), (with_concurrency(ENGINEER, 1),))
    js = nc.jetstream()
    engineer = await js.pull_subscribe_bind(durable=ENGINEER.durable, stream=ENGINEER.stream.name)
    publisher = JetStreamPublisher.from_client(nc)

    first = await repo_ready(nc, publisher, "telegram:500", "queue-one")
    assert " queued" not in await progress_of(nc, first.project_id, "Repository ready")
    (taken,) = await engineer.fetch(1, timeout=30)  # the engineer is building the first
    assert json.loads(taken.data)["project_id"] == str(first.project_id)

    second = await repo_ready(nc, publisher, "telegram:500", "queue-two")
    text = await progress_of(nc, second.project_id, "Repository ready")
    assert text.endswith(". queued: 1 builds ahead of you"), text
    await until_found(nc, PROJECT.name, ev.CodeRequested.TYPE, second.project_id)

    third = await repo_ready(nc, publisher, "telegram:500", "queue-three")
    text = await progress_of(nc, third.project_id, "Repository ready")
    assert text.endswith(". queued: 2 builds ahead of you"), text
    # Only the platform's queue held them: each build was requested at once.
    await until_found(nc, PROJECT.name, ev.CodeRequested.TYPE, third.project_id)


@pytest.mark.usefixtures("coordinator")
async def test_a_clone_url_off_the_forge_is_refused(nc: Client, migrated_db: str) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request = project_request("a bot", user_id=OWNER, source="telegram")
    await publisher.publish(request)
    spec_request = await until_found(nc, PROJECT.name, ev.SpecRequested.TYPE, request.project_id)
    await publisher.publish(
        outcome(
            ev.SpecReady,
            ev.SpecRequested.model_validate(spec_request),
            project_id=request.project_id,
            spec=SPEC,
            offline=True,
        )
    )
    repo = ev.RepoRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.RepoRequested.TYPE, request.project_id)
    )
    await wait_for(lambda: project_row(migrated_db, request.project_id)[0] == "provisioning")
    before = project_row(migrated_db, request.project_id)
    await publisher.publish(
        outcome(
            ev.RepoCreated,
            repo,
            project_id=request.project_id,
            repo_name="evil",
            clone_url="https://evil.example/attacker/evil.git",
            commit="c" * 40,
        )
    )
    await wait_for(
        lambda: "not on the local forge" in str(timeline(migrated_db, request.project_id)[-1][1])
    )
    assert project_row(migrated_db, request.project_id) == before
    assert sql(
        migrated_db, f"SELECT repo_clone_url FROM projects WHERE id = '{request.project_id}'"
    ) == [(None,)]
    assert await code_requests_for(nc, [request.project_id]) == set()


async def test_a_deploy_request_with_a_bad_commit_is_dead_lettered_with_the_reason(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """The runtime rejects it before any handler, so no deploy step ever sees `../../etc`."""
    handled: list[str] = []
    app = ConsumerApp(
        "deployer",
        settings=Settings(nats={"url": fresh_nats.url}, database={"url": migrated_db}),
        specs=(DEPLOYER,),
    )

    @app.handles(ev.DeployRequested)
    async def record(ctx: StepContext, event: ev.DeployRequested) -> Sequence[Event]:
        handled.append(event.commit)
        return []

    good = ev.DeployRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=uuid.uuid4(),
        spec=SPEC,
        clone_url="git://127.0.0.1/expense-tracker.git",
        commit="d" * 40,
        server_name="local",
        host="127.0.0.1",
        port=20001,
    )
    forged = {**good.model_dump(mode="json"), "event_id": str(uuid.uuid4())}
    forged["commit"] = "../../../etc/passwd"
    await nc.jetstream().publish(
        ev.DeployRequested.TYPE, json.dumps(forged).encode(), stream=DEPLOY.name
    )
    await JetStreamPublisher.from_client(nc).publish(good)

    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    try:
        await wait_for(lambda: handled == ["d" * 40])
        dlq = DeadLetterQueue(nc.jsm(), JetStreamPublisher.from_client(nc))
        for _ in range(100):
            dead = await dlq.list()
            if dead:
                break
            await asyncio.sleep(0.1)
        (letter,) = dead
        assert letter.consumer == DEPLOYER.durable
        assert "invalid deploy.requested" in letter.error
        assert "commit" in letter.error and "pattern" in letter.error
    finally:
        stop.set()
        await serving
    assert handled == ["d" * 40]


@pytest.mark.usefixtures("coordinator")
async def test_archiving_a_running_build_starts_the_waiting_one(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    first = await repo_ready(nc, publisher, "telegram:400", "first-app")
    await until_found(nc, PROJECT.name, ev.CodeRequested.TYPE, first.project_id)
    second = await repo_ready(nc, publisher, "telegram:400", "second-app")
    await wait_for(lambda: "queued" in str(timeline(migrated_db, second.project_id)[-1][1]))
    assert await code_requests_for(nc, [second.project_id]) == set()

    await publisher.publish(
        archive_request(first.project_id, first.correlation_id, "", user_id="telegram:400")
    )
    await until_found(nc, PROJECT.name, ev.CodeRequested.TYPE, second.project_id)
    assert project_row(migrated_db, first.project_id)[0] == "archived"
    assert "build started" in str(timeline(migrated_db, second.project_id)[-1][1])


async def test_the_cli_registers_its_operator_once_and_keeps_a_block(migrated_db: str) -> None:
    endpoints = Endpoints(
        nats_url="", database_url=migrated_db, vault_addr="", vault_token="", state_dir=Path()
    )
    assert await as_operator(endpoints, "alice") == "cli:alice"
    query = "SELECT role, status FROM users WHERE id = 'cli:alice'"
    assert sql(migrated_db, query) == [("admin", "active")]
    sql_exec(migrated_db, "UPDATE users SET status = 'blocked' WHERE id = 'cli:alice'")
    await as_operator(endpoints, "alice")
    assert sql(migrated_db, query) == [("admin", "blocked")]
