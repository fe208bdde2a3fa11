"""The embedded git host: bare repositories on disk, served to clones and pushes by `git daemon`.

The daemon speaks the same git protocol as a remote host, so the engineer and deployer steps
run their real clone code against it. It is read-only and anonymous: clones need no account,
and pushes go to the bare repository's path on disk (`url.<base_dir>/.pushInsteadOf`), which
only the stack's user can write (the base directory is 0700).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from infra.stack.git_daemon import push_by_path

from .git_cli import Git
from .ports import HostedRepo

DEFAULT_BRANCH = "main"


class LocalForge:
    """A `GitHost` keeping `<name>.git` under `base_dir`, reachable at `<daemon_url>/<name>.git`."""

    def __init__(self, base_dir: Path, daemon_url: str) -> None:
        self.base_dir = base_dir
        self.daemon_url = daemon_url.rstrip("/")
        # Two deliveries for the same slug must not run `git init` over each other.
        self._lock = asyncio.Lock()

    def path_for(self, name: str) -> Path:
        return self.base_dir / f"{name}.git"

    async def ensure_repo(self, name: str, description: str) -> HostedRepo:
        path = self.path_for(name)
        async with self._lock:
            self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Always (re)initialise: on an existing repository `git init` only adds what is
            # missing, so one half-created by a process killed mid-init (HEAD written, objects/
            # not yet) is repaired instead of failing every redelivery with "not a git directory".
            init = ["init", "--bare", "--quiet"]
            if not (path / "HEAD").is_file():
                init.append(f"--initial-branch={DEFAULT_BRANCH}")
            path.mkdir(parents=True, exist_ok=True)
            # A process killed inside `git init` or `git config` leaves its lock file, and every
            # redelivery would fail on it ("could not lock config file"). The lock above holds
            # this process off, and a redelivery only comes once the earlier holder stopped
            # heartbeating its message (it is gone), so a lock file found here is stale.
            for stale in ("config.lock", "HEAD.lock"):
                (path / stale).unlink(missing_ok=True)
            await Git(path)(*init)
            git = Git(path)
            # Idempotent: a repository created by an older version or by hand gets the same
            # settings: exported even without --export-all, and no longer asking the daemon to
            # accept pushes (the daemon refuses that override anyway).
            await git("config", "--unset-all", "daemon.receivepack", check=False)
            (path / "git-daemon-export-ok").touch()
            (path / "description").write_text(f"{description.strip() or name}\n")
            _, head, _ = await git("symbolic-ref", "--short", "HEAD")
        return HostedRepo(
            name=name,
            clone_url=f"{self.daemon_url}/{name}.git",
            web_url="",
            default_branch=head.strip() or DEFAULT_BRANCH,
        )

    async def list_repos(self) -> list[HostedRepo]:
        """The bare repositories under `base_dir` (a directory with a `HEAD` is one)."""
        if not self.base_dir.is_dir():
            return []
        names = sorted(
            path.name.removesuffix(".git")
            for path in self.base_dir.glob("*.git")
            if (path / "HEAD").is_file()
        )
        return [
            HostedRepo(
                name=name,
                clone_url=f"{self.daemon_url}/{name}.git",
                web_url="",
                default_branch=DEFAULT_BRANCH,
            )
            for name in names
        ]

    async def git_auth_config(self) -> Mapping[str, str]:
        """Push to the bare repositories' paths: the daemon serves reads only."""
        return push_by_path(self.base_dir, self.daemon_url)
