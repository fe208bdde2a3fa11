"""Change requests through the coordinator over the real bus and database: every other step
(analyst, repo, engineer, deployer) is played by the test, so each hop's command is checked.

A live project is recorded as the coordinator leaves it after its first deploy; the tests then
walk one revision through question, revised spec, offline rendering, code and deploy, and the
ways a change is refused or ends without touching the live release.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client

from consumers.coordinator.app import build_app
from contracts import events as ev
from contracts.spec import Endpoint, Entity, EntityField, ProjectSpec, ServiceKind
from contracts.topology import DEPLOY, NOTIFY, PROJECT
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.intents import change_request, clarification_answer

from .conftest import plain_url, sql, wait_for
from .test_coordinator import add_user, outcome, stored, until_stored

OWNER, STRANGER = "cli:owner", "cli:stranger"
LIVE_COMMIT, RENDERED, REVISED_COMMIT = "c" * 40, "d" * 40, "e" * 40
SPEC = ProjectSpec(
    name="Expense API",
    slug="expense-api",
    summary="Tracks expenses",
    kinds=(ServiceKind.HTTP,),
    entities=(Entity(name="Expense", fields=(EntityField(name="amount", type="float"),)),),
    endpoints=(Endpoint(path="/expenses"),),
)
REVISED = SPEC.model_copy(
    update={
        "slug": "something-else",  # an analyst's slip: the coordinator keeps the project's slug
        "entities": (*SPEC.entities, Entity(name="Contact")),
        "endpoints": (*SPEC.endpoints, Endpoint(path="/contacts")),
    }
)


@pytest.fixture
async def coordinator(fresh_nats: NatsServer, migrated_db: str) -> AsyncIterator[None]:
    add_user(migrated_db, OWNER)
    add_user(migrated_db, STRANGER)
    app = build_app(Settings(nats={"url": fresh_nats.url}, database={"url": migrated_db}))
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    yield
    stop.set()
    await task


def live_project(
    db_url: str, *, state: str = "active", slug: str = "expense-api"
) -> tuple[uuid.UUID, uuid.UUID]:
    """A project as the coordinator leaves it once its first release is live."""
    project_id, flow_id = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(plain_url(db_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO projects (id, flow_id, user_id, description, name, slug, state,"
            " version, spec, answers, offline, code_commit, repo_clone_url, repo_branch,"
            " repo_commit, server_name, host, port, url, attempts, created_at, updated_at)"
            " VALUES (%s, %s, %s, 'an expense api', 'Expense API', %s, %s, 5,"
            " %s, '[]', true, %s, 'git://127.0.0.1/expense-api.git', 'main', %s, 'local',"
            " '127.0.0.1', 20001, 'http://127.0.0.1:20001', '{}', now(), now())",
            (
                project_id,
                flow_id,
                OWNER,
                slug,
                state,
                json.dumps(SPEC.model_dump(mode="json")),
                LIVE_COMMIT,
                "a" * 40,
            ),
        )
    return project_id, flow_id


def timeline(db_url: str, project_id: uuid.UUID) -> list[str]:
    rows = sql(
        db_url,
        f"SELECT summary FROM project_events WHERE project_id = '{project_id}'"
        " ORDER BY occurred_at, id",
    )
    return [str(row[0]) for row in rows]


def project_row(db_url: str, project_id: uuid.UUID) -> dict[str, Any]:
    (row,) = sql(
        db_url,
        f"SELECT state, code_commit, spec, slug FROM projects WHERE id = '{project_id}'",
    )
    return {"state": row[0], "code_commit": row[1], "spec": row[2], "slug": row[3]}


def revisions(db_url: str, project_id: uuid.UUID) -> list[tuple[object, ...]]:
    return sql(
        db_url,
        "SELECT number, status, commit, summary FROM project_revisions"
        f" WHERE project_id = '{project_id}' ORDER BY number",
    )


async def notifications(nc: Client, project_id: uuid.UUID) -> list[dict[str, object]]:
    found = await stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE)
    return [n for n in found if n["project_id"] == str(project_id)]


async def until_notified(
    nc: Client, project_id: uuid.UUID, predicate: Any
) -> list[dict[str, object]]:
    for _ in range(100):
        found = [n for n in await notifications(nc, project_id) if predicate(n)]
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no matching notification for project {project_id}")


@pytest.mark.usefixtures("coordinator")
async def test_a_change_becomes_revision_2_from_question_to_live_release(
    nc: Client, migrated_db: str
) -> None:
    """The whole revision: the analyst's question and its answer, the revised spec rendered over
    the live commit (offline), code from that commit, a deploy, and the timeline of each step."""
    publisher = JetStreamPublisher.from_client(nc)
    project_id, flow_id = live_project(migrated_db)
    change = change_request(project_id, flow_id, "add contacts", user_id=OWNER, source="cli")
    await publisher.publish(change)

    (first,) = await until_stored(nc, PROJECT.name, ev.SpecRevisionRequested.TYPE, 1)
    request = ev.SpecRevisionRequested.model_validate(first)
    assert (request.revision, request.change, request.spec) == (2, "add contacts", SPEC)
    assert request.correlation_id == flow_id

    # A second change while the first is in flight is refused, and the owner is told why.
    await publisher.publish(
        change_request(project_id, flow_id, "add notes", user_id=OWNER, source="cli")
    )
    (refused,) = await until_notified(nc, project_id, lambda n: n["kind"] == "failure")
    assert "revision 2" in str(refused["text"]) and "still in progress" in str(refused["text"])

    await publisher.publish(
        outcome(
            ev.ClarificationAsked,
            request,
            project_id=project_id,
            question="Which fields should a contact have?",
            offline=True,
        )
    )
    await until_notified(nc, project_id, lambda n: n["kind"] == "question")
    assert project_row(migrated_db, project_id)["state"] == "active"  # it keeps serving
    await publisher.publish(
        clarification_answer(project_id, flow_id, "name and phone", user_id=OWNER, source="cli")
    )
    requests = await until_stored(nc, PROJECT.name, ev.SpecRevisionRequested.TYPE, 2)
    again = ev.SpecRevisionRequested.model_validate(requests[1])
    assert again.answers == ("name and phone",) and again.revision == 2

    await publisher.publish(
        outcome(
            ev.SpecRevised,
            again,
            project_id=project_id,
            revision=2,
            spec=REVISED,
            summary="added entity Contact (GET/POST /contacts).",
            offline=True,
        )
    )
    (render,) = await until_stored(nc, PROJECT.name, ev.RepoRevisionRequested.TYPE, 1)
    render_cmd = ev.RepoRevisionRequested.model_validate(render)
    assert render_cmd.base_commit == LIVE_COMMIT  # the current commit, not the scaffold
    assert render_cmd.spec.slug == "expense-api"

    await publisher.publish(
        outcome(
            ev.RepoRevised,
            render_cmd,
            project_id=project_id,
            revision=2,
            commit=RENDERED,
            files=("app/models.py", "app/api.py"),
        )
    )
    code = await until_stored(nc, PROJECT.name, ev.CodeRequested.TYPE, 1)
    code_cmd = ev.CodeRequested.model_validate(code[0])
    assert code_cmd.base_commit == RENDERED
    assert code_cmd.change == "add contacts\nname and phone"

    await publisher.publish(
        outcome(
            ev.CodeGenerated,
            code_cmd,
            project_id=project_id,
            commit=REVISED_COMMIT,
            mode="offline",
            tests_passed=7,
        )
    )
    (deploy,) = await until_stored(nc, DEPLOY.name, ev.DeployRequested.TYPE, 1)
    deploy_cmd = ev.DeployRequested.model_validate(deploy)
    assert deploy_cmd.commit == REVISED_COMMIT and deploy_cmd.port == 20001
    assert [e.name for e in deploy_cmd.spec.entities] == ["Expense", "Contact"]
    # Until the new release is live, the project's spec and commit are the old ones.
    assert project_row(migrated_db, project_id)["code_commit"] == LIVE_COMMIT

    await publisher.publish(
        outcome(
            ev.DeploySucceeded,
            deploy_cmd,
            project_id=project_id,
            commit=REVISED_COMMIT,
            release="r2",
            url="http://127.0.0.1:20001",
        )
    )
    (live,) = await until_notified(
        nc, project_id, lambda n: n["kind"] == "done" and "Revision 2" in str(n["text"])
    )
    assert "added entity Contact" in str(live["text"])
    row = project_row(migrated_db, project_id)
    assert row["state"] == "active" and row["code_commit"] == REVISED_COMMIT
    assert row["slug"] == "expense-api"
    assert [e["name"] for e in row["spec"]["entities"]] == ["Expense", "Contact"]
    assert revisions(migrated_db, project_id) == [
        (1, "live", LIVE_COMMIT, "the spec the project was first built from"),
        (2, "live", REVISED_COMMIT, "added entity Contact (GET/POST /contacts)."),
    ]
    notes = [s for s in timeline(migrated_db, project_id) if s.startswith("revision 2 ")]
    assert notes == [
        "revision 2 requested: add contacts",
        "revision 2 question: Which fields should a contact have?",
        "revision 2 answer received",
        "revision 2 spec: added entity Contact (GET/POST /contacts).",
        f"revision 2 rendered {RENDERED[:8]} (app/models.py, app/api.py)",
        f"revision 2 code {REVISED_COMMIT[:8]}: 7 tests passed (offline)",
        "revision 2 live at http://127.0.0.1:20001: added entity Contact (GET/POST /contacts).",
    ]


@pytest.mark.usefixtures("coordinator")
async def test_a_change_offline_rules_cannot_express_leaves_the_project_as_it_was(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    project_id, flow_id = live_project(migrated_db)
    await publisher.publish(
        change_request(
            project_id, flow_id, "return totals per month", user_id=OWNER, source="cli"
        )
    )
    (first,) = await until_stored(nc, PROJECT.name, ev.SpecRevisionRequested.TYPE, 1)
    request = ev.SpecRevisionRequested.model_validate(first)
    await publisher.publish(
        outcome(
            ev.SpecRevisionFailed,
            request,
            project_id=project_id,
            revision=2,
            reason="offline mode cannot make this change; set ORCH_LLM__PROVIDER",
            needs_llm=True,
        )
    )
    (told,) = await until_notified(nc, project_id, lambda n: n["kind"] == "failure")
    assert "ORCH_LLM__PROVIDER" in str(told["text"])
    assert "keeps serving at http://127.0.0.1:20001" in str(told["text"])
    row = project_row(migrated_db, project_id)
    assert (row["state"], row["code_commit"]) == ("active", LIVE_COMMIT)
    assert [r[:2] for r in revisions(migrated_db, project_id)] == [(1, "live"), (2, "refused")]

    # The project takes the next change at once: it becomes revision 3.
    await publisher.publish(
        change_request(project_id, flow_id, "add contacts", user_id=OWNER, source="cli")
    )
    requests = await until_stored(nc, PROJECT.name, ev.SpecRevisionRequested.TYPE, 2)
    assert requests[1]["revision"] == 3


@pytest.mark.usefixtures("coordinator")
async def test_a_failed_release_of_a_change_is_rolled_back_and_the_project_stays_live(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    project_id, flow_id = live_project(migrated_db)
    await publisher.publish(
        change_request(project_id, flow_id, "add contacts", user_id=OWNER, source="cli")
    )
    (first,) = await until_stored(nc, PROJECT.name, ev.SpecRevisionRequested.TYPE, 1)
    request = ev.SpecRevisionRequested.model_validate(first)
    await publisher.publish(
        outcome(
            ev.SpecRevised,
            request,
            project_id=project_id,
            revision=2,
            spec=REVISED,
            summary="added entity Contact.",
            offline=True,
        )
    )
    (render,) = await until_stored(nc, PROJECT.name, ev.RepoRevisionRequested.TYPE, 1)
    render_cmd = ev.RepoRevisionRequested.model_validate(render)
    await publisher.publish(
        outcome(ev.RepoRevised, render_cmd, project_id=project_id, revision=2, commit=RENDERED)
    )
    (code,) = await until_stored(nc, PROJECT.name, ev.CodeRequested.TYPE, 1)
    code_cmd = ev.CodeRequested.model_validate(code)
    await publisher.publish(
        outcome(
            ev.CodeGenerated,
            code_cmd,
            project_id=project_id,
            commit=REVISED_COMMIT,
            mode="offline",
            tests_passed=7,
        )
    )
    (deploy,) = await until_stored(nc, DEPLOY.name, ev.DeployRequested.TYPE, 1)
    await publisher.publish(
        outcome(
            ev.DeployFailed,
            ev.DeployRequested.model_validate(deploy),
            project_id=project_id,
            commit=REVISED_COMMIT,
            reason="health check failed",
            rolled_back=True,
        )
    )
    await wait_for(lambda: revisions(migrated_db, project_id)[-1][1] == "failed")
    row = project_row(migrated_db, project_id)
    assert (row["state"], row["code_commit"]) == ("active", LIVE_COMMIT)
    assert [e["name"] for e in row["spec"]["entities"]] == ["Expense"]
    assert any(
        s.startswith("revision 2 deploy failed: health check failed")
        for s in timeline(migrated_db, project_id)
    )


@pytest.mark.usefixtures("coordinator")
async def test_changes_are_refused_for_strangers_and_projects_not_yet_live(
    nc: Client, migrated_db: str
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    live_id, live_flow = live_project(migrated_db)
    await publisher.publish(
        change_request(live_id, live_flow, "add contacts", user_id=STRANGER, source="cli")
    )
    (stranger,) = await until_notified(nc, live_id, lambda n: n["user_id"] == STRANGER)
    assert "only its owner or an admin" in str(stranger["text"])

    building_id, building_flow = live_project(migrated_db, state="building", slug="other")
    await publisher.publish(
        change_request(building_id, building_flow, "add contacts", user_id=OWNER, source="cli")
    )
    (not_live,) = await until_notified(nc, building_id, lambda n: n["kind"] == "failure")
    assert "is building: only a live project" in str(not_live["text"])
    assert await stored(nc, PROJECT.name, ev.SpecRevisionRequested.TYPE) == []
