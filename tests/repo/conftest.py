"""Fixtures of the repo tests: specs of every kind, a forge on the git daemon, a fake GitHub."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumers.repo.local_forge import LocalForge
from contracts.spec import (
    BotCommand,
    ConfigVar,
    Endpoint,
    Entity,
    EntityField,
    ProjectSpec,
    ServiceKind,
)
from infra.stack.git_daemon import GitDaemon
from tests.repo.fake_github import FakeGitHub

GITHUB_TOKEN = "ghp_fakeTokenForTests0123456789abcdefABCD"


def make_spec(*kinds: ServiceKind, slug: str | None = None) -> ProjectSpec:
    """A spec exercising every part of the templates: entities, endpoints, commands, secrets."""
    return ProjectSpec(
        name="Family Expenses",
        slug=slug or f"expenses-{uuid.uuid4().hex[:8]}",
        summary='Tracks the family\'s "expenses" by category.\nSends a monthly report.',
        kinds=kinds,
        entities=(
            Entity(
                name="Expense",
                fields=(
                    EntityField(name="amount", type="float", description="How much was spent"),
                    EntityField(name="spent on", type="date"),
                    EntityField(name="note"),
                    EntityField(name="reimbursed", type="bool"),
                    EntityField(name="created", type="datetime"),
                    EntityField(name="quantity", type="int"),
                ),
            ),
            Entity(name="Category", fields=(EntityField(name="title"),)),
        ),
        endpoints=(
            Endpoint(method="POST", path="/expenses", summary="Record an expense"),
            Endpoint(method="GET", path="/report", summary="Monthly totals"),
        ),
        commands=(
            BotCommand(command="add", description="Add an expense"),
            BotCommand(command="/report", description="This month's totals"),
        ),
        config=(
            ConfigVar(name="OPENAI_API_KEY", description="Categorises notes", secret=True),
            ConfigVar(name="CURRENCY", description="ISO currency code", default="EUR"),
            ConfigVar(name="REPORT_CHAT_ID", description="Where the report goes"),
        ),
        acceptance_criteria=("An added expense shows up in the list",),
    )


def git(*args: str, cwd: Path | None = None) -> str:
    """Synchronous git for assertions (the code under test uses its own async runner)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def forge(git_daemon: GitDaemon) -> LocalForge:
    return LocalForge(git_daemon.data_dir, git_daemon.base_url)


@pytest.fixture
async def github(git_daemon: GitDaemon) -> AsyncIterator[FakeGitHub]:
    """Fake GitHub API whose repositories are bare repositories in the git daemon's directory.

    Its clone URLs are the repositories' `file://` paths: the daemon serves reads only, and the
    step must be able to push as it would to GitHub.
    """

    def init_bare(name: str) -> None:
        git("init", "--bare", "--quiet", "--initial-branch=main", str(git_daemon.path_for(name)))

    def clone_url_for(name: str) -> str:
        return git_daemon.path_for(name).as_uri()

    async with FakeGitHub(GITHUB_TOKEN, clone_url_for, init_bare) as fake:
        yield fake
