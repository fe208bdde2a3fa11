"""The ports the repo step works over: a git host and a scaffolder.

`RepoService` talks only to these protocols; the local forge, GitHub and the Jinja scaffolder
are adapters beside it, so tests swap a host without touching the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from contracts.spec import ProjectSpec


@dataclass(frozen=True)
class HostedRepo:
    """A repository as its host reports it; `clone_url` never carries credentials."""

    name: str
    clone_url: str
    web_url: str
    default_branch: str


class GitHost(Protocol):
    """Where repositories live: get-or-create by name, listing, and the credentials to push."""

    async def ensure_repo(self, name: str, description: str) -> HostedRepo:
        """Return the repository called `name`, creating it first if it does not exist."""
        ...

    async def list_repos(self) -> list[HostedRepo]:
        """Every repository the host keeps for this deployment (the reconciliation reads it)."""
        ...

    async def git_auth_config(self) -> Mapping[str, str]:
        """Git configuration (e.g. `http.extraHeader`) that authenticates fetch and push.

        It reaches git through `GIT_CONFIG_*` environment variables only, never argv or URLs,
        so credentials cannot leak into logs, events or `ps` output.
        """
        ...


@dataclass(frozen=True)
class Scaffold:
    """A rendered repository: relative POSIX paths to file contents."""

    files: Mapping[str, str]


class Scaffolder(Protocol):
    """Turns a spec into the files of a runnable, tested service."""

    def render(self, spec: ProjectSpec) -> Scaffold: ...
