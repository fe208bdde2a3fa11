"""What the deployer needs from the world: a playbook runner, secrets, the inventory, a ledger."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ServerTarget:
    """How to reach one inventory server over SSH; the host key is pinned, never learned."""

    name: str
    host: str
    ssh_port: int
    ssh_user: str
    host_key: str


@dataclass(frozen=True)
class PlaybookRun:
    """One playbook run against one server.

    `extravars` are plain configuration and may be written anywhere; `secrets` and the private
    key are handed over only through files the runner owns for the length of the run.
    """

    playbook: str
    target: ServerTarget
    extravars: Mapping[str, Any]
    private_key: str = field(repr=False)
    secrets: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class PlaybookResult:
    """What a run ended with.

    `stats` holds what the playbook reported with `set_stats` (the deploy outcome); `failure`
    is the message of the last failed task and `unreachable` the SSH error, each empty if none.
    """

    status: str
    stats: Mapping[str, Any]
    failure: str = ""
    unreachable: str = ""
    duration_seconds: float = 0.0


class PlaybookRunner(Protocol):
    async def run(self, run: PlaybookRun) -> PlaybookResult:
        """Run the playbook to its end (success or failure); raise only if it could not start."""
        ...


class SecretSource(Protocol):
    async def read(self, path: str) -> Mapping[str, str] | None:
        """The KV secret at `path`, or None when nothing is stored there."""
        ...

    async def delete_project_secrets(self, project_id: uuid.UUID) -> list[str]:
        """Delete every version of every secret of an archived project; their names."""
        ...


class ServerInventory(Protocol):
    async def get(self, name: str) -> ServerTarget | None:
        """The server called `name` if releases may go there (not new, provisioning, retired)."""
        ...


@dataclass(frozen=True)
class DeploymentRecord:
    """One row of the deployments ledger; (project_id, commit) is its natural key."""

    project_id: uuid.UUID
    commit: str
    release: str
    server_name: str
    status: str
    url: str | None
    error: str | None


class DeploymentRecords(Protocol):
    async def save(self, record: DeploymentRecord) -> None:
        """Create or update the record for (project_id, commit)."""
        ...
