"""A deploy that lacks secrets waits for them, over the real bus and PostgreSQL.

The coordinator runs as its own process would; the test plays the other steps. A deploy that
reports missing secrets moves the project to `awaiting_secrets`, with each name on the timeline
and in the chat message together with the three ways to store it. Secret notices count only
from the owner; the last missing one resumes the same deploy in the project's own flow. A
secret stored while the deployer was still reading Vault is not lost: the deploy goes again.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client

from contracts import events as ev
from contracts.spec import ConfigVar, ProjectSpec, ServiceKind
from contracts.topology import DEPLOY, NOTIFY, PROJECT
from infra.bus.publisher import JetStreamPublisher
from infra.vault import project_secret_path
from producers.intents import project_request, secret_stored

from .conftest import sql, wait_for
from .test_coordinator import coordinator, outcome, stored, until_found

__all__ = ["coordinator"]  # the fixture, used by name below

OWNER = "cli:dee"
STRANGER = "cli:ana"
TOKEN, KEY = "TELEGRAM_BOT_TOKEN", "STRIPE_API_KEY"


def bot_spec(slug: str) -> ProjectSpec:
    return ProjectSpec(
        name="Expense bot",
        slug=slug,
        summary="Records expenses",
        kinds=(ServiceKind.TELEGRAM_BOT,),
        config=(ConfigVar(name=TOKEN, secret=True), ConfigVar(name=KEY, secret=True)),
    )


async def drive_to_deploying(
    nc: Client, publisher: JetStreamPublisher, spec: ProjectSpec, port: int
) -> tuple[ev.ProjectRequested, ev.DeployRequested]:
    """Play every step's part until the coordinator asks for the deploy."""
    request = project_request("an expense bot", user_id=OWNER, source="cli")
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
            repo_name=spec.slug,
            clone_url=f"git://127.0.0.1/{spec.slug}.git",
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
    return request, deploy


def project_row(db: str, project_id: uuid.UUID) -> tuple[str, list[str]]:
    ((state, missing),) = sql(
        db, f"SELECT state, missing_secrets FROM projects WHERE id = '{project_id}'"
    )
    return str(state), list(missing)  # type: ignore[call-overload]


def timeline(db: str, project_id: uuid.UUID) -> list[str]:
    rows = sql(
        db,
        f"SELECT summary FROM project_events WHERE project_id = '{project_id}' ORDER BY id",
    )
    return [str(row[0]) for row in rows]


async def deploys_of(nc: Client, project_id: uuid.UUID) -> list[ev.DeployRequested]:
    return [
        ev.DeployRequested.model_validate(found)
        for found in await stored(nc, DEPLOY.name, ev.DeployRequested.TYPE)
        if found["project_id"] == str(project_id)
    ]


async def notes_of(nc: Client, project_id: uuid.UUID) -> list[dict[str, object]]:
    return [
        n
        for n in await stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE)
        if n["project_id"] == str(project_id)
    ]


def stored_notice(request: ev.ProjectRequested, name: str, user_id: str) -> ev.SecretStored:
    path = project_secret_path(str(request.project_id), name)
    return secret_stored(request.project_id, request.correlation_id, name, path, user_id=user_id)


@pytest.mark.usefixtures("coordinator")
async def test_a_deploy_waits_for_its_secrets_and_resumes_when_the_last_is_stored(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request, deploy = await drive_to_deploying(nc, publisher, bot_spec("waits-bot"), 20031)

    await publisher.publish(
        outcome(
            ev.DeployAwaitingSecrets,
            deploy,
            project_id=request.project_id,
            commit=deploy.commit,
            missing=(TOKEN, KEY),
            checked_at=datetime.now(UTC),
        )
    )
    await wait_for(lambda: project_row(migrated_db, request.project_id)[0] == "awaiting_secrets")
    assert project_row(migrated_db, request.project_id)[1] == [TOKEN, KEY]
    assert f"deploy waits for secrets: {TOKEN}, {KEY}" in timeline(migrated_db, request.project_id)
    notes = await notes_of(nc, request.project_id)
    waiting = [n for n in notes if "before it can go live" in str(n["text"])]
    assert len(waiting) == 1, notes
    text = str(waiting[0]["text"])
    assert waiting[0]["correlation_id"] == str(request.correlation_id)
    for name in (TOKEN, KEY):
        assert f"/secret {name} waits-bot" in text
        assert f"orchestrator secrets set waits-bot {name}" in text
        assert f"PUT /projects/{request.project_id}/secrets/{name}" in text
    # No step budget runs out while the project waits for a person.
    ((deadline,),) = sql(
        migrated_db, f"SELECT step_deadline FROM projects WHERE id = '{request.project_id}'"
    )
    assert deadline is None

    # A stranger's notice changes nothing; the owner's first secret leaves one missing.
    await publisher.publish(stored_notice(request, KEY, STRANGER))
    await publisher.publish(stored_notice(request, TOKEN, OWNER))
    await wait_for(lambda: project_row(migrated_db, request.project_id)[1] == [KEY])
    assert project_row(migrated_db, request.project_id)[0] == "awaiting_secrets"
    assert len(await deploys_of(nc, request.project_id)) == 1
    assert any(
        f"Still missing: {KEY}" in str(n["text"]) for n in await notes_of(nc, request.project_id)
    )

    last = stored_notice(request, KEY, OWNER)
    await publisher.publish(last)
    await wait_for(lambda: project_row(migrated_db, request.project_id)[0] == "deploying")
    first, resumed = await deploys_of(nc, request.project_id)
    assert resumed.causation_id == last.event_id
    assert resumed.correlation_id == request.correlation_id
    assert (resumed.commit, resumed.port, resumed.spec) == (first.commit, first.port, first.spec)
    assert project_row(migrated_db, request.project_id)[1] == []
    assert any(s.startswith("deploy resumed") for s in timeline(migrated_db, request.project_id))

    await publisher.publish(
        outcome(
            ev.DeploySucceeded,
            resumed,
            project_id=request.project_id,
            commit=resumed.commit,
            release="r1",
            url="http://127.0.0.1:20031",
        )
    )
    await wait_for(lambda: project_row(migrated_db, request.project_id)[0] == "active")

    # A later release that needs a new secret leaves the live one serving, and says so.
    redeploy = resumed.model_copy(update={"event_id": uuid.uuid4(), "commit": "c" * 40})
    await publisher.publish(
        outcome(
            ev.DeployAwaitingSecrets,
            redeploy,
            project_id=request.project_id,
            commit="c" * 40,
            missing=("SMTP_PASSWORD",),
            checked_at=datetime.now(UTC),
        )
    )
    await wait_for(
        lambda: (
            "SMTP_PASSWORD"
            in str(
                sql(migrated_db, f"SELECT error FROM projects WHERE id = '{request.project_id}'")
            )
        )
    )
    assert project_row(migrated_db, request.project_id) == ("active", [])
    told = [n for n in await notes_of(nc, request.project_id) if n["kind"] == "failure"]
    assert "previous release is still serving" in str(told[-1]["text"])
    assert "orchestrator secrets set waits-bot SMTP_PASSWORD" in str(told[-1]["text"])


@pytest.mark.usefixtures("coordinator")
async def test_a_secret_stored_while_the_deployer_looked_resumes_at_once(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    request, deploy = await drive_to_deploying(nc, publisher, bot_spec("race-bot"), 20032)
    checked_at = datetime.now(UTC) - timedelta(seconds=5)  # the deployer read Vault, then…
    notice = stored_notice(request, TOKEN, OWNER)  # …the owner stored the token
    await publisher.publish(notice)
    await wait_for(
        lambda: any(
            f"secret {TOKEN} stored" in s for s in timeline(migrated_db, request.project_id)
        )
    )

    await publisher.publish(
        outcome(
            ev.DeployAwaitingSecrets,
            deploy,
            project_id=request.project_id,
            commit=deploy.commit,
            missing=(TOKEN,),
            checked_at=checked_at,
        )
    )
    await wait_for(
        lambda: any(
            s.startswith("deploy resumed") for s in timeline(migrated_db, request.project_id)
        )
    )
    assert project_row(migrated_db, request.project_id) == ("deploying", [])
    deploys = await deploys_of(nc, request.project_id)
    assert len(deploys) == 2
    assert deploys[1].commit == deploy.commit
