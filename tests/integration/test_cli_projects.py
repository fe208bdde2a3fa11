"""`orchestrator projects`, run as an operator runs it, against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from infra.db.models import Project, ProjectState
from infra.db.session import make_engine, make_sessionmaker
from tests.project_seed import seed_project

ROOT = Path(__file__).resolve().parents[2]



def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ORCH_NATS__URL": "nats://127.0.0.1:1",  # never dialled: the command reads the database
        "ORCH_DATABASE__URL": database_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", "projects", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
async def seeded(migrated_db: str) -> str:
    engine = make_engine(migrated_db)
    sessions = make_sessionmaker(engine)
    try:
        await seed_project(sessions, "tg:1", state=ProjectState.ACTIVE, slug="notes-api")
        await seed_project(sessions, "tg:2", state=ProjectState.FAILED, slug="expense-bot")
        gone = await seed_project(sessions, "tg:1", state=ProjectState.ARCHIVED, slug="old-one")
        async with sessions() as session, session.begin():
            await session.execute(
                update(Project)
                .where(Project.slug == "notes-api")
                .values(url="http://127.0.0.1:21000", port=21000)
            )
        assert gone.slug == "old-one"
    finally:
        await engine.dispose()
    return migrated_db


def test_projects_lists_everyones_live_and_failed_projects_newest_first(seeded: str) -> None:
    result = cli(seeded)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["project", "name", "state", "owner", "created", "url"]
    assert [line.split()[1:4] for line in lines[1:]] == [
        ["expense-bot", "failed", "tg:2"],
        ["notes-api", "active", "tg:1"],
    ]
    assert lines[2].endswith("http://127.0.0.1:21000")


def test_projects_filters_by_state_and_owner_and_answers_json(seeded: str) -> None:
    everything = json.loads(cli(seeded, "--all", "--json").stdout)
    assert [p["slug"] for p in everything] == ["old-one", "expense-bot", "notes-api"]
    live = json.loads(cli(seeded, "--state", "active", "--json").stdout)
    assert [(p["slug"], p["port"], p["url"], p["owner"]) for p in live] == [
        ("notes-api", 21000, "http://127.0.0.1:21000", "tg:1")
    ]
    mine = json.loads(cli(seeded, "--user", "tg:1", "--state", "archived", "--json").stdout)
    assert [p["slug"] for p in mine] == ["old-one"]

    nothing = cli(seeded, "--user", "tg:9")
    assert nothing.returncode == 0
    assert nothing.stdout.strip() == "no projects match"

    wrong = cli(seeded, "--state", "running")
    assert wrong.returncode == 2
    assert "invalid choice: 'running'" in wrong.stderr
