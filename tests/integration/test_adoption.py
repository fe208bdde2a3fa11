"""Adopting a repository served by the local forge's git daemon, from the CLI door through the
real coordinator and repo consumers (real NATS, PostgreSQL, git daemon); the test plays the
provisioner and the engineer, so each hop's command is checked up to the deploy request."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from consumers.coordinator.app import build_app as build_coordinator
from consumers.repo.app import build_app as build_repo
from consumers.repo.local_forge import LocalForge
from contracts import events as ev
from contracts.topology import DEPLOY, INTENTS, PROJECT
from infra.bus.publisher import JetStreamPublisher
from infra.repo_urls import ForgeSettings
from infra.settings import Settings
from infra.stack.git_daemon import GitDaemon
from infra.stack.nats_server import NatsServer
from producers.cli.adopt import adopt
from producers.cli.endpoints import Endpoints

from .conftest import sql, wait_for
from .test_coordinator import add_user, outcome, until_stored

OWNER = "cli:adopter"

SERVICE = {
    "requirements.txt": "",
    "app/__init__.py": "",
    "app/__main__.py": "print('serving')\n",
    "tests/test_app.py": "def test_ok():\n    assert True\n",
    ".env.example": "PORT=8000\nLOG_LEVEL=debug\nAPI_TOKEN=\n",
    "README.md": "# Notes\n\nKeeps the team's notes.\n",
}


def source_repository(daemon: GitDaemon, name: str, files: dict[str, str]) -> str:
    """A repository on the daemon holding `files` in one commit; its clone URL."""
    bare = daemon.path_for(name)
    subprocess.run(["git", "init", "--bare", "--quiet", "-b", "main", str(bare)], check=True)
    (bare / "git-daemon-export-ok").touch()
    work = bare.parent / f"{name}-work"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(work)], check=True)
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", *env, "-C", str(work), "commit", "-qm", "first"], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", str(bare), "main"], check=True)
    return daemon.url_for(name)


@pytest.fixture
async def consumers(
    fresh_nats: NatsServer, migrated_db: str, git_daemon: GitDaemon
) -> AsyncIterator[ForgeSettings]:
    add_user(migrated_db, OWNER)
    forge = ForgeSettings(daemon_url=git_daemon.base_url.rstrip("/"))
    settings = Settings(
        nats={"url": fresh_nats.url}, database={"url": migrated_db, "pool_size": 5}
    )
    apps = [
        build_coordinator(settings, forge=forge),
        build_repo(
            settings, host=LocalForge(git_daemon.data_dir, forge.daemon_url), forge=forge
        ),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(app.serve(stop)) for app in apps]
    while any(app.publisher is None for app in apps):
        await asyncio.sleep(0.05)
    yield forge
    stop.set()
    await asyncio.gather(*tasks)


async def adopt_from_cli(
    fresh_nats: NatsServer, db: str, tmp_path: Path, url: str, forge: ForgeSettings
) -> tuple[uuid.UUID, list[str]]:
    lines: list[str] = []
    endpoints = Endpoints(fresh_nats.url, db, "", "", tmp_path)
    assert await adopt(endpoints, url, "adopter", lines.append, forge) == 0
    return uuid.UUID(lines[0].split()[1]), lines


async def test_a_forge_repository_is_adopted_up_to_its_deploy(
    consumers: ForgeSettings,
    fresh_nats: NatsServer,
    migrated_db: str,
    git_daemon: GitDaemon,
    nc: Client,
    tmp_path: Path,
) -> None:
    name = f"notes-{uuid.uuid4().hex[:6]}"
    url = source_repository(git_daemon, name, SERVICE)
    project_id, lines = await adopt_from_cli(fresh_nats, migrated_db, tmp_path, url, consumers)
    assert lines[2] == f"adopting {url}"

    code = (await until_stored(nc, PROJECT.name, ev.CodeRequested.TYPE, 1))[0]
    assert code["project_id"] == str(project_id)
    assert code["verify_only"] is True
    spec = code["spec"]
    assert spec["slug"] == f"{name}-{project_id.hex[:6]}"  # never written into the source
    assert [v["name"] for v in spec["config"] if v["secret"]] == ["API_TOKEN"]
    assert {"name": "LOG_LEVEL", "default": "debug"}.items() <= {
        k: v for v in spec["config"] if v["name"] == "LOG_LEVEL" for k, v in v.items()
    }.items()
    # The imported repository holds the source's commit plus the derived deploy.json.
    imported = git_daemon.path_for(spec["slug"])
    show = subprocess.run(
        ["git", "--git-dir", str(imported), "show", f"{code['base_commit']}:deploy.json"],
        check=True, capture_output=True, text=True,
    )
    assert json.loads(show.stdout)["start"] == ["python", "-m", "app"]
    assert code["clone_url"] == git_daemon.url_for(spec["slug"])

    request = ev.CodeRequested.model_validate(code)
    publisher = JetStreamPublisher.from_client(nc)
    await publisher.publish(
        outcome(ev.ResourcesAllocated, request, project_id=project_id,
                server_name="local", host="127.0.0.1", port=20555)
    )
    await publisher.publish(
        outcome(ev.CodeGenerated, request, project_id=project_id,
                commit=request.base_commit, mode="offline", tests_passed=1)
    )
    deploy = (await until_stored(nc, DEPLOY.name, ev.DeployRequested.TYPE, 1))[0]
    assert deploy["commit"] == request.base_commit
    assert deploy["spec"]["config"] == spec["config"]
    await wait_for(
        lambda: sql(migrated_db, f"SELECT state FROM projects WHERE id = '{project_id}'")
        == [("deploying",)]
    )
    timeline = [r[0] for r in sql(
        migrated_db,
        f"SELECT summary FROM project_events WHERE project_id = '{project_id}'"
        " ORDER BY occurred_at",
    )]
    assert any("inspected:" in line and "secrets: API_TOKEN" in line for line in timeline)


async def test_a_repository_that_cannot_run_fails_with_what_is_missing(
    consumers: ForgeSettings,
    fresh_nats: NatsServer,
    migrated_db: str,
    git_daemon: GitDaemon,
    nc: Client,
    tmp_path: Path,
) -> None:
    url = source_repository(
        git_daemon, f"static-{uuid.uuid4().hex[:6]}", {"Dockerfile": "FROM nginx\n"}
    )
    project_id, _ = await adopt_from_cli(fresh_nats, migrated_db, tmp_path, url, consumers)
    await wait_for(
        lambda: sql(migrated_db, f"SELECT state FROM projects WHERE id = '{project_id}'")
        == [("failed",)]
    )
    [(error,)] = sql(migrated_db, f"SELECT error FROM projects WHERE id = '{project_id}'")
    assert "cannot be deployed as it is. Missing:" in str(error)
    assert "a start command" in str(error) and "requirements.txt" in str(error)


async def test_a_forged_intent_for_another_host_is_refused_by_the_coordinator(
    consumers: ForgeSettings, migrated_db: str, nc: Client
) -> None:
    project_id = uuid.uuid4()
    forged = ev.ProjectAdoptRequested(
        correlation_id=uuid.uuid4(), actor=OWNER, project_id=project_id,
        repository_url="git://10.0.0.5:9418/internal.git", user_id=OWNER, source="cli",
    )
    await JetStreamPublisher.from_client(nc).publish(forged)
    await until_stored(nc, INTENTS.name, ev.ProjectAdoptRequested.TYPE, 1)
    await wait_for(
        lambda: sql(
            migrated_db, f"SELECT count(*) FROM project_events WHERE project_id = '{project_id}'"
        ) == [(1,)]
    )
    assert sql(migrated_db, f"SELECT count(*) FROM projects WHERE id = '{project_id}'") == [(0,)]
    [(summary,)] = sql(
        migrated_db, f"SELECT summary FROM project_events WHERE project_id = '{project_id}'"
    )
    assert "refused" in str(summary) and "not a repository on this system's git host" in str(
        summary
    )
