"""The reconciliation end to end: a real forge on git daemon, nats-server, PostgreSQL, the repo
process, and `orchestrator reconcile` run as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from sqlalchemy import delete, func, select

from consumers.repo.app import build_app
from consumers.repo.local_forge import LocalForge
from contracts import events as ev
from contracts.topology import NOTIFY, OPS
from infra.bus.publisher import JetStreamPublisher
from infra.db.enums import UserRole
from infra.db.models import (
    Deployment,
    Incident,
    PortAllocation,
    Project,
    ProjectEvent,
    ProjectState,
    Server,
    User,
)
from infra.db.session import make_engine, make_sessionmaker
from infra.settings import Settings
from infra.stack.git_daemon import GitDaemon
from infra.stack.nats_server import NatsServer
from producers.scheduler.ticks import tick_for
from tests.integration.conftest import sql, wait_for
from tests.integration.test_coordinator import stored
from tests.project_seed import seed_project

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def repo_process(tmp_path: Path, database_url: str, forge: LocalForge) -> AsyncIterator[str]:
    """The repo process on a nats-server of its own; yields the server's URL."""
    with NatsServer(tmp_path / "nats") as server:
        settings = Settings(nats={"url": server.url}, database={"url": database_url})
        app = build_app(settings, host=forge)
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop))
        try:
            while app.publisher is None:  # streams exist once the app has started
                await asyncio.sleep(0.05)
            yield server.url
        finally:
            stop.set()
            await serving


async def reconcile(tmp_path: Path, nats_url: str, database_url: str, *args: str) -> str:
    """The CLI in a subprocess; its wait runs in a thread, so the repo process keeps serving."""
    env = {
        **os.environ,
        "ORCH_NATS__URL": nats_url,
        "ORCH_DATABASE__URL": database_url,
        "ORCH_STATE_DIR": str(tmp_path / "no-stack"),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "producers.cli", "reconcile", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def own_git_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    """A forge of its own: the session's git daemon holds other tests' repositories, which
    this test's reconciliation would rightly report as orphans."""
    with GitDaemon(tmp_path / "git") as server:
        yield server


async def test_reconcile_reports_repairs_and_resolves_once_the_causes_are_fixed(
    tmp_path: Path, migrated_url: str, own_git_daemon: GitDaemon
) -> None:
    git_daemon = own_git_daemon
    forge = LocalForge(git_daemon.data_dir, git_daemon.base_url)
    engine = make_engine(migrated_url)
    sessions = make_sessionmaker(engine)
    kept = await seed_project(sessions, "tg:1", state=ProjectState.ACTIVE, slug="kept-api")
    lost = await seed_project(sessions, "tg:1", state=ProjectState.ACTIVE, slug="lost-api")
    retired = await seed_project(sessions, "tg:2", state=ProjectState.ARCHIVED, slug="old-bot")
    kept_repo = await forge.ensure_repo("kept-api", "kept")
    lost_repo = await forge.ensure_repo("lost-api", "lost")
    shutil.rmtree(forge.path_for("lost-api"))  # deleted on the host behind the system's back
    await forge.ensure_repo("stray-repo", "nobody's")
    gone_project = uuid.uuid4()
    async with sessions() as session, session.begin():
        for project, repo in ((kept, kept_repo), (lost, lost_repo)):
            await session.execute(
                Project.__table__.update()
                .where(Project.id == project.id)
                .values(repo_clone_url=repo.clone_url)
            )
        server = Server(name="web-1", host="127.0.0.1", host_key="127.0.0.1 ssh-ed25519 AAAA")
        session.add(server)
        # Who hears about it: the admin with a chat; never a member, even one with a chat.
        session.add_all(
            [
                User(id="telegram:9", role=UserRole.ADMIN, chat_id=9),
                User(id="telegram:8", role=UserRole.MEMBER, chat_id=8),
            ]
        )
        await session.flush()
        session.add_all(
            [
                PortAllocation(server_id=server.id, port=20001, project_id=kept.id),
                PortAllocation(server_id=server.id, port=20002, project_id=gone_project),
                PortAllocation(server_id=server.id, port=20003, project_id=retired.id),
                Deployment(
                    project_id=gone_project,
                    commit="a" * 40,
                    release="ghost-aaaaaaa",
                    server_name="web-1",
                    status="deployed",
                ),
            ]
        )

    async def open_keys() -> set[str]:
        async with sessions() as session:
            keys = await session.scalars(select(Incident.key).where(Incident.status == "open"))
            return set(keys.all())

    try:
        async with repo_process(tmp_path, migrated_url, forge) as nats_url:
            report = json.loads(await reconcile(tmp_path, nats_url, migrated_url, "--json"))
            assert {(f["kind"], f["key"]) for f in report["findings"]} == {
                ("orphan_repository", "reconcile:repo:stray-repo"),
                ("repository_missing", f"reconcile:project-repo:{lost.id}"),
                ("orphan_release", f"reconcile:release:{gone_project}"),
                ("port_held_by_archived", f"reconcile:port:{server.id}:20003"),
            }
            assert report["repairs"] == [
                {
                    "action": "port_freed",
                    "project_id": str(gone_project),
                    "server": "web-1",
                    "port": 20002,
                }
            ]
            assert forge.path_for("stray-repo").is_dir()  # reported, never deleted
            async with sessions() as session:
                ports = await session.scalars(select(PortAllocation.port))
                assert sorted(ports.all()) == [20001, 20003]
            assert len(await open_keys()) == 4

            # A second run finds the same things: no second incident per key.
            again = json.loads(await reconcile(tmp_path, nats_url, migrated_url, "--json"))
            assert len(again["findings"]) == 4 and again["repairs"] == []
            async with sessions() as session:
                assert await session.scalar(select(func.count()).select_from(Incident)) == 4

            # Without --json (piped): a plain table, one row per finding, kind first.
            table = (await reconcile(tmp_path, nats_url, migrated_url)).splitlines()
            assert table[0].split() == ["finding", "what", "to", "do"]
            assert sorted(line.split()[0] for line in table[1:]) == [
                "orphan_release",
                "orphan_repository",
                "port_held_by_archived",
                "repository_missing",
            ]
            assert any(
                line.startswith("orphan_repository") and "stray-repo" in line for line in table
            )

            # The operator fixes each cause; the next scheduled tick resolves every incident
            # and frees the archived project's port, now that its stop is recorded.
            shutil.rmtree(forge.path_for("stray-repo"))
            await forge.ensure_repo("lost-api", "restored")
            async with sessions() as session, session.begin():
                await session.execute(
                    delete(Deployment).where(Deployment.project_id == gone_project)
                )
                session.add(
                    ProjectEvent(
                        project_id=retired.id,
                        event_id=uuid.uuid4(),
                        event_type=ev.DeployStopped.TYPE,
                        actor="coordinator",
                        summary="service stopped on web-1, port 20003 free",
                        state=ProjectState.ARCHIVED,
                        occurred_at=datetime.now(UTC),
                    )
                )
            nc = await nats.connect(nats_url)
            try:
                await JetStreamPublisher.from_client(nc).publish(
                    tick_for("reconcile", datetime.now(UTC), 600)
                )

                await wait_for(
                    lambda: (
                        sql(migrated_url, "SELECT count(*) FROM incidents WHERE status = 'open'")[
                            0
                        ][0]
                        == 0
                    ),
                    60,
                )
                assert len(await stored(nc, OPS.name, ev.IncidentOpened.TYPE)) == 4
                assert len(await stored(nc, OPS.name, ev.IncidentResolved.TYPE)) == 4
                told = await stored(nc, NOTIFY.name, ev.NotificationRequested.TYPE)
                assert {(n["user_id"], n["chat_id"]) for n in told} == {("telegram:9", 9)}
                texts = sorted(str(n["text"]) for n in told)
                assert len(texts) == 8, texts
                assert any(
                    "stray-repo" in t and "adopt it (orchestrator adopt)" in t
                    and not t.startswith("Reconciliation: resolved")
                    for t in texts
                ), texts
                assert sum(t.startswith("Reconciliation: resolved: ") for t in texts) == 4
            finally:
                await nc.close()
            async with sessions() as session:
                ports = await session.scalars(select(PortAllocation.port))
                assert list(ports.all()) == [20001]
            text = await reconcile(tmp_path, nats_url, migrated_url)
            assert "nothing to reconcile" in text, text
    finally:
        await engine.dispose()
