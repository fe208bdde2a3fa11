"""Adopting a repository: fetch it, read it (never run it), import it as the project's repository.

Triggered by `project.repo.adopt.requested` from the coordinator. The source URL is checked
again here against the configured git host (`infra.repo_urls.check_source_url`), so a forged
request cannot make this step fetch from elsewhere. The fetch verifies every object
(`transfer.fsckObjects`: no `..` or `.git` paths, no malformed trees) and the checkout writes
symbolic links as plain files (`core.symlinks=false`); repository hooks, filters and submodules
never run (git's configuration is isolated, `git_cli.py`). The inspector reads the checkout
(`inspection.py`); the repository's own tests run later, in the engineer's sandbox.

A runnable repository is pushed to the project's repository on the git host (named by the
slug) as it is, or with one commit on top that adds the `deploy.json` the inspector derived.
That commit's dates come from the request and it carries a `Project-Id` trailer, so a
redelivered request builds the same commit and the push converges.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from infra.repo_urls import ForeignCloneUrl, ForgeSettings, check_source_url

from .errors import GitHostUnavailable, RepoHostError
from .git_cli import Git
from .inspection import Runnable, Unrunnable, inspect_checkout
from .ports import GitHost, HostedRepo
from .service import PROJECT_TRAILER, _fetch, _push

ADOPTION_TRAILER = "Adopted-By: codegen-orchestrator"
#: Fetching a hostile repository: check every object, write links as plain files, and speak
#: only the network protocols a git host uses (never `file://` or `ext::`).
_FETCH_CONFIG = {
    "transfer.fsckObjects": "true",
    "core.symlinks": "false",
    "protocol.allow": "never",
    "protocol.git.allow": "always",
    "protocol.https.allow": "always",
    "protocol.ssh.allow": "always",
    "submodule.recurse": "false",
}
#: A fetch of a repository too large to inspect and test is cut off here.
FETCH_TIMEOUT_SECONDS = 300.0


class AdoptionRefused(RepoHostError):
    """The repository cannot be adopted as it is; the message says what is missing."""


@dataclass(frozen=True)
class AdoptionResult:
    hosted: HostedRepo
    commit: str
    inspection: Runnable


class Adopter:
    """Inspects repositories on the configured git host and imports the runnable ones."""

    def __init__(self, host: GitHost, forge: ForgeSettings) -> None:
        self._host = host
        self._forge = forge

    async def adopt(
        self,
        source_url: str,
        slug: str,
        project_id: uuid.UUID,
        *,
        requested_at: datetime | None = None,
    ) -> AdoptionResult:
        try:
            check_source_url(source_url, self._forge)
        except ForeignCloneUrl as exc:
            raise AdoptionRefused(str(exc)) from exc
        auth = dict(await self._host.git_auth_config())
        when = requested_at or datetime.now(UTC)
        with tempfile.TemporaryDirectory(prefix=f"adopt-{slug}-") as tmp:
            work = Path(tmp) / "checkout"
            work.mkdir()
            reader = Git(work, config={**auth, **_FETCH_CONFIG},
                         timeout_seconds=FETCH_TIMEOUT_SECONDS)
            await reader("init", "--quiet")
            head = await _fetch_source(reader, source_url)
            await reader("checkout", "--quiet", "--force", "-B", "adopted", head)
            found = inspect_checkout(work, slug=slug, source_url=source_url)
            if isinstance(found, Unrunnable):
                raise AdoptionRefused(found.explanation(source_url))
            hosted = await self._host.ensure_repo(slug, found.spec.summary[:300])
            git = Git(work, config=auth)
            commit = head
            if found.deploy_json is not None:
                commit = await _commit_manifest(git, found.deploy_json, project_id, when)
            for _ in range(3):
                target = await _fetch(git, hosted)
                if target == commit or await _contains(git, target, commit):
                    return AdoptionResult(hosted, commit, found)
                if target is not None and not await _contains(git, commit, target):
                    raise AdoptionRefused(
                        f"repository {hosted.name} already holds other history; adopt under "
                        "another name or archive the project that owns it"
                    )
                if await _push(git, hosted, commit):
                    return AdoptionResult(hosted, commit, found)
        raise GitHostUnavailable(
            f"{slug}: the branch kept moving while the adopted repository was pushed; retrying"
        )


async def _fetch_source(git: Git, url: str) -> str:
    """The commit the source's HEAD points at, fetched with every object checked."""
    code, _, stderr = await git("fetch", "--quiet", "--no-tags", "--", url, "HEAD", check=False)
    if code != 0:
        detail = " ".join(stderr.split())[:500]
        if "fsck" in detail or "bad tree" in detail or "dangerous" in detail:
            raise AdoptionRefused(f"{url} holds malformed git objects: {detail}")
        if "does not appear to be a git repository" in detail or "not found" in detail.lower():
            raise AdoptionRefused(f"{url} is not a repository this system can read: {detail}")
        if "couldn't find remote ref" in detail.lower():
            raise AdoptionRefused(f"{url} is empty: it has no commit to adopt")
        raise GitHostUnavailable(f"fetching {url} failed: {detail}")
    _, out, _ = await git("rev-parse", "FETCH_HEAD^{commit}")
    return out.strip()


async def _commit_manifest(
    git: Git, deploy_json: str, project_id: uuid.UUID, when: datetime
) -> str:
    (git.cwd / "deploy.json").write_text(deploy_json, encoding="utf-8")
    await git("add", "--", "deploy.json")
    date = f"@{int(when.timestamp())} +0000"
    message = (
        "Add deploy.json for the adopted repository\n\n"
        "Written from the start command the inspection recognised.\n\n"
        f"{ADOPTION_TRAILER}\n{PROJECT_TRAILER}: {project_id}\n"
    )
    await git(
        "commit", "--quiet", "--no-verify", "--file=-",
        env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
        stdin=message,
    )
    _, out, _ = await git("rev-parse", "HEAD")
    return out.strip()


async def _contains(git: Git, descendant: str | None, ancestor: str) -> bool:
    """True when `ancestor` is in the history of `descendant`."""
    if descendant is None:
        return False
    code, _, _ = await git("merge-base", "--is-ancestor", ancestor, descendant, check=False)
    return code == 0
