"""The repo step: get-or-create the repository and push the scaffold, converging on redelivery.

The natural key is the spec's slug (the repository name); the scaffold commit is recognised by
its `Project-Id` trailer. A redelivered `RepoRequested` therefore finds the repository and the
commit it already pushed and returns them, instead of failing on "already exists" or "nothing to
commit". The commit's dates come from the request, so two deliveries racing each other build the
same commit id and the second push is a no-op.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from contracts.spec import ProjectSpec

from .errors import GitHostUnavailable, RepoHostError
from .git_cli import Git, command_error
from .ports import GitHost, HostedRepo, Scaffold, Scaffolder

SCAFFOLD_TRAILER = "Scaffolded-By: codegen-orchestrator"
PROJECT_TRAILER = "Project-Id"
_REMOTE = "refs/remotes/origin"
#: Push rejections that mean another writer updated the branch first (a twin delivery, the
#: engineer): fetch again and look for the scaffold instead of failing.
_BRANCH_MOVED = ("fetch first", "non-fast-forward", "failed to update ref", "cannot lock ref")


@dataclass(frozen=True)
class RepoResult:
    repo_name: str
    clone_url: str
    web_url: str
    default_branch: str
    commit: str


class RepoService:
    """Creates and scaffolds repositories on one git host."""

    def __init__(self, host: GitHost, scaffolder: Scaffolder) -> None:
        self._host = host
        self._scaffolder = scaffolder

    async def create(
        self, spec: ProjectSpec, project_id: uuid.UUID, *, requested_at: datetime | None = None
    ) -> RepoResult:
        """The repository of `spec` with its scaffold commit on the default branch.

        `requested_at` dates the commit (pass the request's timestamp so a retry rebuilds the
        identical commit); it defaults to now.
        """
        hosted = await self._host.ensure_repo(spec.slug, spec.summary)
        auth = await self._host.git_auth_config()
        scaffold = self._scaffolder.render(spec)
        when = requested_at or datetime.now(UTC)
        with tempfile.TemporaryDirectory(prefix=f"repo-{spec.slug}-") as tmp:
            git = Git(Path(tmp), config=auth)
            await git("init", "--quiet", f"--initial-branch={hosted.default_branch}")
            # A concurrent writer can move the branch between our fetch and our push; the
            # second round sees its commit (ours, if it was a twin delivery) and converges.
            for _ in range(3):
                head = await _fetch(git, hosted)
                if head is not None:
                    found = await _find_scaffold(git, hosted, project_id)
                    if found is not None:
                        return _result(hosted, found)
                commit = await _commit(git, hosted, spec, project_id, scaffold, head, when)
                if await _push(git, hosted, commit):
                    return _result(hosted, commit)
        raise GitHostUnavailable(
            f"{hosted.name}: the branch {hosted.default_branch} kept moving while the scaffold "
            "was pushed; retrying later"
        )


def _result(hosted: HostedRepo, commit: str) -> RepoResult:
    return RepoResult(
        repo_name=hosted.name,
        clone_url=hosted.clone_url,
        web_url=hosted.web_url,
        default_branch=hosted.default_branch,
        commit=commit,
    )


async def _fetch(git: Git, hosted: HostedRepo) -> str | None:
    """Fetch the default branch; its head commit, or None while the repository is empty."""
    await git("fetch", "--quiet", "--no-tags", hosted.clone_url, f"+refs/heads/*:{_REMOTE}/*")
    code, out, _ = await git(
        "rev-parse",
        "--verify",
        "--quiet",
        f"{_REMOTE}/{hosted.default_branch}^{{commit}}",
        check=False,
    )
    return out.strip() if code == 0 else None


async def _find_scaffold(git: Git, hosted: HostedRepo, project_id: uuid.UUID) -> str | None:
    """This project's scaffold commit on the branch; refuses a branch scaffolded for another one."""
    _, out, _ = await git(
        "log",
        f"--format=%H %(trailers:key={PROJECT_TRAILER},valueonly,separator=%x2C)",
        f"{_REMOTE}/{hosted.default_branch}",
    )
    others: set[str] = set()
    for line in out.splitlines():
        commit, _, owner = line.partition(" ")
        owner = owner.strip()
        if owner == str(project_id):
            return commit
        if owner:
            others.add(owner)
    if others:
        raise RepoHostError(
            f"repository {hosted.name} already holds the scaffold of project "
            f"{', '.join(sorted(others))}; choose another slug for project {project_id}"
        )
    return None


async def _commit(
    git: Git,
    hosted: HostedRepo,
    spec: ProjectSpec,
    project_id: uuid.UUID,
    scaffold: Scaffold,
    parent: str | None,
    when: datetime,
) -> str:
    """Commit the scaffold on top of `parent` (or as the root commit); returns its id."""
    if parent is not None:
        await git("checkout", "--quiet", "--force", "-B", hosted.default_branch, parent)
    else:
        await git("checkout", "--quiet", "--orphan", hosted.default_branch)
    for path, content in scaffold.files.items():
        target = git.cwd / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    await git("add", "--all")
    message = (
        f"Scaffold {spec.name} ({', '.join(k.value for k in spec.kinds)})\n\n"
        f"Rendered from the project's spec by the repo step.\n\n"
        f"{SCAFFOLD_TRAILER}\n{PROJECT_TRAILER}: {project_id}\n"
    )
    date = f"@{int(when.timestamp())} +0000"
    # --allow-empty: a branch that already holds identical files still gets the marker commit
    # that lets a redelivery recognise the scaffold.
    await git(
        "commit",
        "--quiet",
        "--allow-empty",
        "--no-verify",
        "--file=-",
        env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
        stdin=message,
    )
    _, out, _ = await git("rev-parse", "HEAD")
    return out.strip()


async def _push(git: Git, hosted: HostedRepo, commit: str) -> bool:
    """Push `commit` to the default branch; False when the branch moved (non-fast-forward)."""
    code, out, stderr = await git(
        "push",
        "--porcelain",
        hosted.clone_url,
        f"{commit}:refs/heads/{hosted.default_branch}",
        check=False,
    )
    if code == 0:
        return True
    rejected = [line for line in out.splitlines() if line.startswith("!")]
    if rejected and all(any(m in line for m in _BRANCH_MOVED) for line in rejected):
        return False
    raise command_error(("push",), code, f"{stderr} {' '.join(rejected)}")
