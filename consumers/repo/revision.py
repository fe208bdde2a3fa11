"""Offline revisions: the revised spec rendered over the project's current commit.

Offline, a project's code is its rendered scaffold, so the code of a revision is the revised
spec rendered again, committed on top of the current commit (which stays its parent: history
shows each revision). Files the new spec renders differently are replaced; files it no longer
renders are left alone. When an earlier revision failed after its push, the branch is ahead of
the live commit: the new revision takes the live commit's files and is committed on the branch
head, so history stays linear and nothing of the failed revision remains. The commit carries
`Project-Id` and `Revision` trailers, so a redelivered request finds the commit it already
pushed instead of committing twice.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from contracts.spec import ProjectSpec

from .errors import GitHostUnavailable, RepoHostError
from .git_cli import Git
from .ports import GitHost, Scaffolder
from .service import _REMOTE, PROJECT_TRAILER, SCAFFOLD_TRAILER, _fetch, _push

REVISION_TRAILER = "Revision"


@dataclass(frozen=True)
class RevisionResult:
    commit: str
    files: tuple[str, ...]


class RevisionRenderer:
    """Renders revised specs onto existing repositories of one git host."""

    def __init__(self, host: GitHost, scaffolder: Scaffolder) -> None:
        self._host = host
        self._scaffolder = scaffolder

    async def render(
        self,
        spec: ProjectSpec,
        project_id: uuid.UUID,
        revision: int,
        base_commit: str,
        *,
        requested_at: datetime | None = None,
    ) -> RevisionResult:
        hosted = await self._host.ensure_repo(spec.slug, spec.summary)
        auth = await self._host.git_auth_config()
        scaffold = self._scaffolder.render(spec)
        date = f"@{int((requested_at or datetime.now(UTC)).timestamp())} +0000"
        with tempfile.TemporaryDirectory(prefix=f"revision-{spec.slug}-") as tmp:
            git = Git(Path(tmp), config=auth)
            await git("init", "--quiet", f"--initial-branch={hosted.default_branch}")
            head = await _fetch(git, hosted)
            if head is None:
                raise RepoHostError(f"repository {hosted.name} is empty: nothing to revise")
            found = await _find_revision(git, hosted.default_branch, project_id, revision)
            if found is not None:
                return found
            ancestor = await git("merge-base", "--is-ancestor", base_commit, head, check=False)
            if ancestor[0] != 0:
                raise RepoHostError(
                    f"{hosted.name}: the project's current commit {base_commit[:8]} is not on "
                    f"branch {hosted.default_branch} (at {head[:8]}); the branch was rewritten "
                    "outside the orchestrator, so the revision was not rendered over it"
                )
            await git("checkout", "--quiet", "--force", "-B", hosted.default_branch, head)
            # A revision that failed after its push left its commit on the branch: the new one
            # starts from the live commit's files and still goes on top (history stays linear).
            await git("read-tree", "-u", "--reset", base_commit)
            for path, content in scaffold.files.items():
                target = git.cwd / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content, encoding="utf-8")
            await git("add", "--all")
            _, changed, _ = await git("diff", "--cached", "--name-only")
            message = (
                f"Revision {revision} of {spec.name}\n\n"
                "The revised spec rendered over the current commit by the repo step.\n\n"
                f"{SCAFFOLD_TRAILER}\n{PROJECT_TRAILER}: {project_id}\n"
                f"{REVISION_TRAILER}: {revision}\n"
            )
            await git(
                "commit", "--quiet", "--allow-empty", "--no-verify", "--file=-",
                env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
                stdin=message,
            )  # fmt: skip
            _, out, _ = await git("rev-parse", "HEAD")
            commit = out.strip()
            if not await _push(git, hosted, commit):
                raise GitHostUnavailable(
                    f"{hosted.name}: the branch moved while revision {revision} was pushed; "
                    "retrying later"
                )
            return RevisionResult(commit, tuple(changed.split()))


async def _find_revision(
    git: Git, branch: str, project_id: uuid.UUID, revision: int
) -> RevisionResult | None:
    _, out, _ = await git(
        "log",
        f"--format=%H %(trailers:key={PROJECT_TRAILER},valueonly,separator=%x2C)"
        f"|%(trailers:key={REVISION_TRAILER},valueonly,separator=%x2C)",
        f"{_REMOTE}/{branch}",
    )
    for line in out.splitlines():
        head, _, number = line.partition("|")
        commit, _, owner = head.partition(" ")
        if owner.strip() == str(project_id) and number.strip() == str(revision):
            _, files, _ = await git("diff-tree", "--no-commit-id", "--name-only", "-r", commit)
            return RevisionResult(commit, tuple(files.split()))
    return None
