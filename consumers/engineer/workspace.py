"""Git side of the engineer step: a throwaway checkout at the base commit, commit and push.

The engineer's result is keyed by its natural key (project repository + base commit): the
commit it pushes sits directly on top of `base_commit` and records in git trailers which
agent made it and how many tests passed. A redelivered `CodeRequested` therefore finds that
commit on the remote branch and returns it instead of running the agent (and paying for the
model) again.

Credentials never appear in argv or URLs: the git host adapter supplies environment
variables (e.g. `GIT_CONFIG_*` with an auth header) that only the git child process sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.git_access import isolated_git_env

#: Subject prefix of every commit the engineer makes; part of the natural key.
COMMIT_PREFIX = "engineer: "
_TRAILER = re.compile(r"^(Engineer-Mode|Engineer-Iterations|Tests-Passed|Tests-Failed): (.+)$")
#: Files test runs leave behind that must never be committed.
_EXCLUDES = "__pycache__/\n*.pyc\n.pytest_cache/\n"

GitEnvProvider = Callable[[], Awaitable[Mapping[str, str]]]


class GitUnavailable(Exception):
    """Clone, fetch or push failed for a reason worth retrying (host down, network, auth)."""


class BaseCommitMissing(Exception):
    """The requested base commit is not in the repository: retrying cannot help."""


class BranchMoved(Exception):
    """Someone else pushed to the default branch after `base_commit`; a push would lose work."""


@dataclass(frozen=True)
class EngineerCommit:
    """A commit the engineer pushed earlier, read back from its message and trailers."""

    sha: str
    mode: str
    iterations: int
    tests_passed: int
    tests_failed: int
    summary: str


class GitWorkspaces:
    """Makes temporary checkouts; each is removed when its `checkout` block ends."""

    def __init__(
        self,
        *,
        root: Path | None = None,
        git_env: GitEnvProvider | None = None,
        author_name: str = "Codegen Engineer",
        author_email: str = "engineer@codegen.invalid",
        timeout: float = 300.0,
    ) -> None:
        self._root = root
        self._git_env = git_env
        self._author = (author_name, author_email)
        self._timeout = timeout

    @contextlib.asynccontextmanager
    async def checkout(
        self, clone_url: str, base_commit: str, branch: str
    ) -> AsyncIterator[Workspace]:
        """Clone `clone_url` and check out `base_commit`; the directory goes away afterwards."""
        parent = Path(tempfile.mkdtemp(prefix="engineer-", dir=self._root))
        try:
            env = await self._environment(parent)
            workspace = Workspace(
                parent / "repo", clone_url, base_commit, branch, env, self._timeout
            )
            await workspace.clone()
            yield workspace
        finally:
            await asyncio.to_thread(shutil.rmtree, parent, True)

    async def _environment(self, parent: Path) -> dict[str, str]:
        home = parent / "git-home"
        home.mkdir()
        name, email = self._author
        env = {
            **isolated_git_env(home),
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        if self._git_env is not None:
            env.update(await self._git_env())
        return env


class Workspace:
    """One checkout: the agent edits files under `path`; the step commits and pushes."""

    def __init__(
        self,
        path: Path,
        clone_url: str,
        base_commit: str,
        branch: str,
        env: dict[str, str],
        timeout: float,
    ) -> None:
        self.path = path
        self.clone_url = clone_url
        self.base_commit = base_commit
        self.branch = branch
        self._env = env
        self._timeout = timeout

    async def clone(self) -> None:
        await self._git("clone", "--quiet", "--no-checkout", self.clone_url, str(self.path),
                        cwd=self.path.parent, failure=GitUnavailable)
        if await self._git_status("cat-file", "-e", f"{self.base_commit}^{{commit}}") != 0:
            raise BaseCommitMissing(
                f"commit {self.base_commit} is not in {self.clone_url}; the repo step must "
                "push the scaffold before the engineer runs"
            )
        await self._git("checkout", "--quiet", "--detach", self.base_commit)
        (self.path / ".git" / "info").mkdir(exist_ok=True)
        (self.path / ".git" / "info" / "exclude").write_text(_EXCLUDES)

    async def previous_result(self) -> EngineerCommit | None:
        """The engineer commit on the remote branch directly on top of `base_commit`, if any."""
        remote = f"refs/remotes/origin/{self.branch}"
        if await self._git_status("rev-parse", "--verify", "--quiet", remote) != 0:
            return None
        log = await self._git(
            "log", "--reverse", "--format=%H%x1f%P%x1f%B%x1e", f"{self.base_commit}..{remote}"
        )
        for record in filter(None, (part.strip() for part in log.split("\x1e"))):
            sha, parents, message = record.split("\x1f", 2)
            if parents.split() != [self.base_commit]:
                continue
            found = _parse_engineer_commit(sha, message)
            if found is not None:
                return found
        return None

    async def commit_and_push(
        self, *, summary: str, mode: str, iterations: int, tests_passed: int, tests_failed: int
    ) -> str | None:
        """Commit every change on top of `base_commit` and push it; None when nothing changed.

        A push refused because the branch moved is re-checked first: another replica may have
        pushed the same result a moment ago, which is success, not a conflict.
        """
        await self._git("add", "--all")
        if await self._git_status("diff", "--cached", "--quiet") == 0:
            return None
        title, _, body = summary.strip().partition("\n")
        message = f"{COMMIT_PREFIX}{title.strip() or 'implement the specification'}\n\n"
        if body.strip():
            message += body.strip() + "\n\n"
        message += (
            f"Engineer-Mode: {mode}\nEngineer-Iterations: {iterations}\n"
            f"Tests-Passed: {tests_passed}\nTests-Failed: {tests_failed}\n"
        )
        await self._git("-c", "commit.gpgsign=false", "commit", "--quiet", "--file=-",
                        stdin=message)
        sha = (await self._git("rev-parse", "HEAD")).strip()
        code, output = await self._run(
            "push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}"
        )
        if code == 0:
            return sha
        if "rejected" not in output and "fetch first" not in output:
            raise GitUnavailable(f"git push to {self.clone_url} failed: {output.strip()[-500:]}")
        await self._git("fetch", "--quiet", "origin", failure=GitUnavailable)
        earlier = await self.previous_result()
        if earlier is not None:
            return earlier.sha
        raise BranchMoved(
            f"branch {self.branch} of {self.clone_url} moved past {self.base_commit} while the "
            "engineer worked; request code again from the new head"
        )

    async def _git(
        self, *args: str, cwd: Path | None = None, stdin: str | None = None,
        failure: type[Exception] = RuntimeError,
    ) -> str:
        code, output = await self._run(*args, cwd=cwd, stdin=stdin)
        if code != 0:
            raise failure(f"git {args[0]} failed ({self.clone_url}): {output.strip()[-500:]}")
        return output

    async def _git_status(self, *args: str) -> int:
        code, _ = await self._run(*args)
        return code

    async def _run(
        self, *args: str, cwd: Path | None = None, stdin: str | None = None
    ) -> tuple[int, str]:
        # Hooks never run: the checkout holds model-written files, and the engineer's git must
        # not execute anything from it (the sandbox also mounts `.git` read-only).
        process = await asyncio.create_subprocess_exec(
            "git", "-c", "core.hooksPath=/dev/null", *args, cwd=cwd or self.path, env=self._env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            stdout, _ = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), self._timeout
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise GitUnavailable(
                f"git {args[0]} on {self.clone_url} timed out after {self._timeout:.0f} s"
            ) from None
        assert process.returncode is not None
        return process.returncode, stdout.decode(errors="replace")


def _parse_engineer_commit(sha: str, message: str) -> EngineerCommit | None:
    title, _, rest = message.partition("\n")
    if not title.startswith(COMMIT_PREFIX):
        return None
    trailers: dict[str, str] = {}
    body: list[str] = []
    for line in rest.strip().splitlines():
        match = _TRAILER.match(line)
        if match:
            trailers[match.group(1)] = match.group(2).strip()
        else:
            body.append(line)
    if trailers.get("Tests-Failed") != "0" or "Tests-Passed" not in trailers:
        return None
    summary = title.removeprefix(COMMIT_PREFIX)
    if any(line.strip() for line in body):
        summary += "\n" + "\n".join(body).strip()
    return EngineerCommit(
        sha=sha,
        mode=trailers.get("Engineer-Mode", "llm"),
        iterations=int(trailers.get("Engineer-Iterations", "0")),
        tests_passed=int(trailers["Tests-Passed"]),
        tests_failed=0,
        summary=summary,
    )
