"""The `git` command line, run as an asyncio subprocess with a controlled environment.

The user's and the system's git configuration are ignored (a `commit.gpgsign` or a hook path
on the host must not change what the step produces). Extra configuration, including a host's
credentials, reaches git through `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`:
environment only, never argv, so it cannot show up in `ps`, in logs or in an error message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from .errors import GitHostUnavailable, RepoHostError

AUTHOR_NAME = "Codegen Orchestrator"
AUTHOR_EMAIL = "codegen-orchestrator@localhost"

#: Phrases in git's stderr that mean the host refused us: retrying cannot help.
_REFUSALS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "permission denied",
    "permission to",
    "access denied",
    "repository not found",
    "returned error: 401",
    "returned error: 403",
    "returned error: 404",
    "protected branch",
    "declined",
)


class GitCommandError(GitHostUnavailable):
    """A git command failed for a reason that may go away (network, a busy host)."""


class GitRefused(RepoHostError):
    """The git host refused the command (credentials, permissions, unknown repository)."""


def git_environment(config: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git child: isolated configuration plus `config`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GIT_", "SSH_ASKPASS"))
    }
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=AUTHOR_NAME,
        GIT_AUTHOR_EMAIL=AUTHOR_EMAIL,
        GIT_COMMITTER_NAME=AUTHOR_NAME,
        GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
    )
    items = list((config or {}).items())
    env["GIT_CONFIG_COUNT"] = str(len(items))
    for index, (key, value) in enumerate(items):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


class Git:
    """Runs git commands in one working directory with one configuration."""

    def __init__(
        self,
        cwd: Path,
        *,
        config: Mapping[str, str] | None = None,
        timeout_seconds: float = 120.0,
    ) -> None:
        self.cwd = cwd
        self._env = git_environment(config)
        self._timeout = timeout_seconds

    async def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        check: bool = True,
    ) -> tuple[int, str, str]:
        """Run `git <args>`; returns (exit code, stdout, stderr), raising on failure if `check`."""
        process = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=self.cwd,
            env={**self._env, **(env or {})},
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        data = stdin.encode() if stdin is not None else None
        try:
            out, err = await asyncio.wait_for(process.communicate(data), self._timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise GitCommandError(
                f"git {args[0]} did not finish within {self._timeout:.0f} s"
            ) from None
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        code = process.returncode if process.returncode is not None else -1
        if check and code != 0:
            raise command_error(args, code, stderr)
        return code, stdout, stderr


def command_error(args: tuple[str, ...], code: int, stderr: str) -> RepoHostError | GitCommandError:
    """The domain error for a failed git command, with git's own explanation."""
    detail = " ".join(stderr.split()) or f"exit code {code}"
    message = f"git {args[0]} failed: {detail}"
    if any(phrase in detail.lower() for phrase in _REFUSALS):
        return GitRefused(message)
    return GitCommandError(message)
