"""Redeploy, restart, rollback and retry, checked by the real coordinator on a real bus.

Each test plays the steps' part (it publishes their outcomes) and the person's part (it
publishes their intents), and watches what the coordinator records and commands: the command
for a legal request, a plain refusal on the timeline and in the person's chat for an illegal
one, and the live and previous releases it keeps for the next rollback.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from consumers.coordinator.app import build_app
from contracts import events as ev
from contracts.envelope import Event
from contracts.topology import DEPLOY, NOTIFY, PROJECT
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.intents import project_request

from .conftest import sql, wait_for
from .test_coordinator import SPEC, add_user, drive_to_active, outcome, stored, until_found

OWNER = "cli:dee"  # the owner `drive_to_active` plays
INTRUDER = "telegram:666"
ADMIN = "cli:root"
LIVE, NEXT = "b" * 40, "c" * 40


@pytest.fixture
async def coordinator(fresh_nats: NatsServer, migrated_db: str, nc: Client) -> AsyncIterator[None]:
    add_user(migrated_db, OWNER)
    add_user(migrated_db, INTRUDER, chat_id=666)
    add_user(migrated_db, ADMIN, role="admin")
    app = build_app(Settings(nats={"url": fresh_nats.url}, database={"url": migrated_db}))
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    yield
    stop.set()
    await task


def intent(cls: type[Event], project: ev.ProjectRequested, user_id: str, **extra: object) -> Event:
    return cls(
        correlation_id=project.correlation_id,
        actor=user_id,
        project_id=project.project_id,
        user_id=user_id,
        **extra,
    )


async def all_for(
    nc: Client, stream: str, subject: str, project_id: uuid.UUID, count: int
) -> list[dict[str, object]]:
    """The messages on `subject` about `project_id`, once at least `count` are stored."""
    found: list[dict[str, object]] = []
    for _ in range(100):
        found = [m for m in await stored(nc, stream, subject) if m["project_id"] == str(project_id)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{subject}: expected {count} for {project_id}, got {len(found)}")


async def note_containing(nc: Client, user_id: str, text: str) -> dict[str, object]:
    for _ in range(100):
        for note in await stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE):
            if note["user_id"] == user_id and text in str(note["text"]):
                return note
        await asyncio.sleep(0.1)
    raise AssertionError(f"no notification for {user_id} containing {text!r}")


def row(db: str, project_id: uuid.UUID) -> tuple[object, ...]:
    rows = sql(
        db,
        "SELECT state, live_commit, previous_commit, operation FROM projects "
        f"WHERE id = '{project_id}'",
    )
    return rows[0]


def summaries(db: str, project_id: uuid.UUID) -> list[str]:
    rows = sql(
        db,
        f"SELECT summary FROM project_events WHERE project_id = '{project_id}' ORDER BY id",
    )
    return [str(r[0]) for r in rows]


@pytest.mark.usefixtures("coordinator")
async def test_redeploy_rollback_and_restart_of_a_live_project(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    project, _ = await drive_to_active(nc, publisher, "notes", SPEC, 20101)
    pid = project.project_id
    await wait_for(lambda: row(migrated_db, pid) == ("active", LIVE, None, None))

    # One release has been live: nothing to roll back to.
    await publisher.publish(intent(ev.ProjectRollbackRequested, project, OWNER))
    refused = await note_containing(nc, OWNER, "no previous release")
    assert refused["kind"] == "failure"
    assert len(await all_for(nc, DEPLOY.name, ev.DeployRequested.TYPE, pid, 1)) == 1

    # A redeploy of another commit is a deploy of that commit; a second one waits for it.
    await publisher.publish(intent(ev.ProjectRedeployRequested, project, OWNER, commit=NEXT))
    deploys = await all_for(nc, DEPLOY.name, ev.DeployRequested.TYPE, pid, 2)
    redeploy = ev.DeployRequested.model_validate(deploys[-1])
    assert redeploy.commit == NEXT
    assert row(migrated_db, pid) == ("active", LIVE, None, "redeploy")
    await publisher.publish(intent(ev.ProjectRestartRequested, project, OWNER))
    await note_containing(nc, OWNER, "a redeploy of project")
    await publisher.publish(
        outcome(ev.DeploySucceeded, redeploy, project_id=pid, commit=NEXT, release="r2", url="u")
    )
    await note_containing(nc, OWNER, f"redeployed {NEXT[:8]}")
    assert row(migrated_db, pid) == ("active", NEXT, LIVE, None)

    # The rollback deploys the previous commit; afterwards the two swap places.
    await publisher.publish(intent(ev.ProjectRollbackRequested, project, OWNER))
    deploys = await all_for(nc, DEPLOY.name, ev.DeployRequested.TYPE, pid, 3)
    rollback = ev.DeployRequested.model_validate(deploys[-1])
    assert rollback.commit == LIVE
    await publisher.publish(
        outcome(ev.DeploySucceeded, rollback, project_id=pid, commit=LIVE, release="r1", url="u")
    )
    await note_containing(nc, OWNER, f"rolled back to {LIVE[:8]}")
    assert row(migrated_db, pid) == ("active", LIVE, NEXT, None)

    # A restart (here by an admin) restarts what serves.
    await publisher.publish(intent(ev.ProjectRestartRequested, project, ADMIN))
    restart = ev.DeployRestartRequested.model_validate(
        await until_found(nc, DEPLOY.name, ev.DeployRestartRequested.TYPE, pid)
    )
    assert (restart.commit, restart.slug, restart.port) == (LIVE, SPEC.slug, 20101)
    await publisher.publish(
        outcome(ev.DeployRestarted, restart, project_id=pid, commit=LIVE, release="r1", url="u")
    )
    await note_containing(nc, OWNER, "restarted")

    # A redeploy without a commit deploys the project's current code; it already serves.
    await publisher.publish(intent(ev.ProjectRedeployRequested, project, OWNER))
    deploys = await all_for(nc, DEPLOY.name, ev.DeployRequested.TYPE, pid, 4)
    again = ev.DeployRequested.model_validate(deploys[-1])
    assert again.commit == LIVE
    await publisher.publish(
        outcome(
            ev.DeploySucceeded, again, project_id=pid, commit=LIVE, release="r1", url="u", noop=True
        )
    )
    await note_containing(nc, OWNER, "nothing was restarted")
    assert row(migrated_db, pid) == ("active", LIVE, NEXT, None)
    timeline = summaries(migrated_db, pid)
    assert any(s.startswith("refused: ") and "no previous release" in s for s in timeline)
    assert any("rollback to" in s for s in timeline)


@pytest.mark.usefixtures("coordinator")
async def test_operations_are_refused_to_strangers_and_in_the_wrong_state(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    project, _ = await drive_to_active(nc, publisher, "notes", SPEC, 20102)
    pid = project.project_id
    await wait_for(lambda: row(migrated_db, pid)[0] == "active")

    await publisher.publish(intent(ev.ProjectRedeployRequested, project, INTRUDER))
    await note_containing(nc, INTRUDER, f"may not redeploy project {pid}")
    await publisher.publish(intent(ev.ProjectRetryRequested, project, OWNER))
    await note_containing(nc, OWNER, "is active, not failed")

    assert len(await all_for(nc, DEPLOY.name, ev.DeployRequested.TYPE, pid, 1)) == 1
    assert await stored(nc, DEPLOY.name, ev.DeployRestartRequested.TYPE) == []
    assert row(migrated_db, pid) == ("active", LIVE, None, None)


@pytest.mark.usefixtures("coordinator")
async def test_retry_resumes_a_failed_project_at_the_failed_step(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request = project_request("notes", user_id=OWNER, source="cli")
    await publisher.publish(request)
    pid = request.project_id
    spec_request = ev.SpecRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.SpecRequested.TYPE, pid)
    )
    await publisher.publish(
        outcome(ev.SpecReady, spec_request, project_id=pid, spec=SPEC, offline=True)
    )
    repo = ev.RepoRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.RepoRequested.TYPE, pid)
    )
    provision = ev.ProvisionRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.ProvisionRequested.TYPE, pid)
    )
    await publisher.publish(
        outcome(
            ev.ResourcesAllocated,
            provision,
            project_id=pid,
            server_name="local",
            host="127.0.0.1",
            port=20103,
        )
    )
    await publisher.publish(
        outcome(
            ev.RepoCreated,
            repo,
            project_id=pid,
            repo_name=SPEC.slug,
            clone_url=f"git://127.0.0.1/{SPEC.slug}.git",
            commit="a" * 40,
        )
    )
    code = ev.CodeRequested.model_validate(
        await until_found(nc, PROJECT.name, ev.CodeRequested.TYPE, pid)
    )
    await publisher.publish(outcome(ev.CodeFailed, code, project_id=pid, reason="tests fail"))
    await wait_for(lambda: row(migrated_db, pid)[0] == "failed")

    await publisher.publish(intent(ev.ProjectRetryRequested, request, OWNER))
    await note_containing(nc, OWNER, "Retrying from the code step")
    codes = await all_for(nc, PROJECT.name, ev.CodeRequested.TYPE, pid, 2)
    retried = ev.CodeRequested.model_validate(codes[-1])
    assert retried.base_commit == "a" * 40
    assert row(migrated_db, pid)[0] == "building"
    # Nothing done before the failure is asked for again.
    assert len(await stored(nc, PROJECT.name, ev.SpecRequested.TYPE)) == 1
    assert len(await stored(nc, PROJECT.name, ev.RepoRequested.TYPE)) == 1

    await publisher.publish(
        outcome(
            ev.CodeGenerated, retried, project_id=pid, commit=LIVE, mode="offline", tests_passed=1
        )
    )
    deploy = ev.DeployRequested.model_validate(
        await until_found(nc, DEPLOY.name, ev.DeployRequested.TYPE, pid)
    )
    await publisher.publish(
        outcome(ev.DeploySucceeded, deploy, project_id=pid, commit=LIVE, release="r1", url="u")
    )
    await wait_for(lambda: row(migrated_db, pid) == ("active", LIVE, None, None))
    assert sql(migrated_db, f"SELECT error FROM projects WHERE id = '{pid}'")[0][0] is None
