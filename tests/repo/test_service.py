"""RepoService against a real git daemon: create, converge on redelivery, refuse a taken slug."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.repo.errors import GitHostUnavailable, RepoHostError
from consumers.repo.local_forge import LocalForge
from consumers.repo.scaffold import JinjaScaffolder
from consumers.repo.service import RepoService
from contracts.spec import ServiceKind
from infra.stack.git_daemon import GitDaemon
from infra.stack.ports import free_port
from tests.repo.conftest import git, make_spec

REQUESTED_AT = datetime(2026, 5, 4, 10, 21, 7, tzinfo=UTC)


@pytest.fixture
def service(forge: LocalForge) -> RepoService:
    return RepoService(forge, JinjaScaffolder())


async def test_creates_the_repository_and_pushes_the_scaffold(
    service: RepoService, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    spec = make_spec(ServiceKind.HTTP)
    project_id = uuid.uuid4()

    result = await service.create(spec, project_id, requested_at=REQUESTED_AT)

    assert result.repo_name == spec.slug
    assert result.clone_url == git_daemon.url_for(spec.slug)
    assert result.default_branch == "main"
    clone = tmp_path / "clone"
    git("clone", "--quiet", result.clone_url, str(clone))
    assert git("rev-parse", "HEAD", cwd=clone) == result.commit
    assert git("log", "-1", "--format=%an <%ae>|%ad", "--date=unix", cwd=clone) == (
        f"Codegen Orchestrator <codegen-orchestrator@localhost>|{int(REQUESTED_AT.timestamp())}"
    )
    assert f"Project-Id: {project_id}" in git("log", "-1", "--format=%B", cwd=clone)
    tracked = set(git("ls-files", cwd=clone).splitlines())
    assert set(JinjaScaffolder().render(spec).files) == tracked
    assert (git_daemon.path_for(spec.slug) / "git-daemon-export-ok").exists()


async def test_a_redelivery_returns_the_same_commit_without_a_new_one(
    service: RepoService, git_daemon: GitDaemon
) -> None:
    spec = make_spec(ServiceKind.WORKER)
    project_id = uuid.uuid4()
    first = await service.create(spec, project_id, requested_at=REQUESTED_AT)

    # Later, with another timestamp (a coordinator retry): still the scaffold commit.
    again = await service.create(spec, project_id)

    assert again == first
    assert git("rev-list", "--count", "main", cwd=git_daemon.path_for(spec.slug)) == "1"


async def test_twin_deliveries_racing_each_other_converge_on_one_commit(
    service: RepoService, git_daemon: GitDaemon
) -> None:
    spec = make_spec(ServiceKind.TELEGRAM_BOT)
    project_id = uuid.uuid4()

    results = await asyncio.gather(
        *(service.create(spec, project_id, requested_at=REQUESTED_AT) for _ in range(3))
    )

    assert len({r.commit for r in results}) == 1
    assert git("rev-list", "--count", "main", cwd=git_daemon.path_for(spec.slug)) == "1"


async def test_the_scaffold_is_found_under_later_commits(
    service: RepoService, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    spec = make_spec(ServiceKind.HTTP)
    project_id = uuid.uuid4()
    scaffold = await service.create(spec, project_id, requested_at=REQUESTED_AT)
    clone = tmp_path / "engineer"
    git("clone", "--quiet", scaffold.clone_url, str(clone))
    (clone / "app" / "extra.py").write_text("VALUE = 1\n")
    git("add", ".", cwd=clone)
    git("-c", "user.name=engineer", "-c", "user.email=e@x", "commit", "-qm", "more", cwd=clone)
    # The daemon serves reads only; like the engineer, push to the repository's path.
    git("push", "--quiet", str(git_daemon.path_for(spec.slug)), "main", cwd=clone)

    again = await service.create(spec, project_id)

    assert again.commit == scaffold.commit


async def test_an_existing_branch_without_a_scaffold_gets_one_on_top(
    service: RepoService, forge: LocalForge, tmp_path: Path
) -> None:
    spec = make_spec(ServiceKind.HTTP)
    hosted = await forge.ensure_repo(spec.slug, "made by hand")
    work = tmp_path / "hand"
    git("clone", "--quiet", hosted.clone_url, str(work))
    (work / "README.md").write_text("# hand-made\n")
    git("add", ".", cwd=work)
    git("-c", "user.name=someone", "-c", "user.email=s@x", "commit", "-qm", "start", cwd=work)
    git("push", "--quiet", str(forge.path_for(spec.slug)), "HEAD:main", cwd=work)
    handmade = git("rev-parse", "HEAD", cwd=work)

    result = await service.create(spec, uuid.uuid4(), requested_at=REQUESTED_AT)

    assert git("rev-parse", f"{result.commit}^", cwd=forge.path_for(spec.slug)) == handmade


async def test_a_slug_scaffolded_for_another_project_is_refused(service: RepoService) -> None:
    spec = make_spec(ServiceKind.HTTP)
    owner = uuid.uuid4()
    await service.create(spec, owner, requested_at=REQUESTED_AT)

    with pytest.raises(RepoHostError, match=f"already holds the scaffold of project {owner}"):
        await service.create(spec, uuid.uuid4())


async def test_an_unreachable_daemon_is_a_transient_error(tmp_path: Path) -> None:
    forge = LocalForge(tmp_path / "git", f"git://127.0.0.1:{free_port()}")
    service = RepoService(forge, JinjaScaffolder())

    with pytest.raises(GitHostUnavailable, match="git fetch failed"):
        await service.create(make_spec(ServiceKind.HTTP), uuid.uuid4())


async def test_ensure_repo_is_idempotent(forge: LocalForge) -> None:
    name = f"idem-{uuid.uuid4().hex[:8]}"
    first = await forge.ensure_repo(name, "one")
    second = await forge.ensure_repo(name, "two")
    assert first == second
    # Nothing asks the daemon to accept pushes: they go to the repository's path.
    config = subprocess.run(
        ["git", "config", "daemon.receivepack"], cwd=forge.path_for(name), check=False
    )
    assert config.returncode == 1  # unset
    assert (forge.path_for(name) / "git-daemon-export-ok").is_file()


async def test_a_repository_left_locked_by_a_killed_init_is_repaired(forge: LocalForge) -> None:
    """A repo process killed inside `git init` leaves `config.lock`; the redelivery must not
    fail on it forever ("could not lock config file")."""
    name = f"killed-{uuid.uuid4().hex[:8]}"
    path = forge.path_for(name)
    path.mkdir(parents=True)
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "config.lock").write_text("")
    repo = await forge.ensure_repo(name, "after a kill")
    assert repo.default_branch == "main"
    assert not (path / "config.lock").exists()
    assert (path / "objects").is_dir()
