"""A released commit's files, read from the git host and cut into chunks.

The indexer clones the project's repository into a temporary directory, checks out the
released commit and chunks every file (`infra.memory.chunk_tree`); the directory is removed
afterwards. Git runs with hooks disabled and a private HOME, so nothing in the repository (all
of it model-written) executes, and credentials (GitHub only) travel in environment variables
that the git child alone sees, never in argv or the URL.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from infra.git_access import isolated_git_env
from infra.memory import CodeChunk, chunk_tree

GitEnvProvider = Callable[[], Awaitable[Mapping[str, str]]]


class RepositoryUnavailable(Exception):
    """The git host did not serve the clone (down, unreachable, refused): worth retrying."""


class CommitMissing(Exception):
    """The commit is not in the repository: retrying cannot help."""


class ReleaseReader:
    """Reads the chunks of one commit of one repository."""

    def __init__(
        self,
        *,
        root: Path | None = None,
        git_env: GitEnvProvider | None = None,
        timeout: float = 120.0,
    ) -> None:
        self._root = root
        self._git_env = git_env
        self._timeout = timeout

    async def chunks(self, clone_url: str, commit: str) -> list[CodeChunk]:
        parent = Path(tempfile.mkdtemp(prefix="indexer-", dir=self._root))
        try:
            home = parent / "git-home"
            home.mkdir()
            env = isolated_git_env(home)
            if self._git_env is not None:
                env.update(await self._git_env())
            checkout = parent / "repo"
            code, output = await self._git(
                env, parent, "clone", "--quiet", "--no-checkout", clone_url, str(checkout)
            )
            if code != 0:
                raise RepositoryUnavailable(f"git clone of {clone_url} failed: {output[-500:]}")
            code, _ = await self._git(env, checkout, "cat-file", "-e", f"{commit}^{{commit}}")
            if code != 0:
                raise CommitMissing(f"commit {commit} is not in {clone_url}")
            code, output = await self._git(env, checkout, "checkout", "--quiet", "--detach", commit)
            if code != 0:
                raise RepositoryUnavailable(f"git checkout of {commit} failed: {output[-500:]}")
            return await asyncio.to_thread(lambda: list(chunk_tree(checkout)))
        finally:
            await asyncio.to_thread(shutil.rmtree, parent, True)

    async def _git(self, env: Mapping[str, str], cwd: Path, *args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            "git",
            "-c",
            "core.hooksPath=/dev/null",
            *args,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RepositoryUnavailable(
                f"git {args[0]} timed out after {self._timeout:g} s"
            ) from None
        assert process.returncode is not None
        return process.returncode, stdout.decode(errors="replace").strip()
