"""What the deployer needs from the world: a playbook runner, secrets, the inventory, a ledger."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

# Re-exported: the deployer's modules and tests name them as its ports.
from infra.playbook_runner import PlaybookResult as PlaybookResult
from infra.playbook_runner import PlaybookRun as PlaybookRun
from infra.playbook_runner import ServerTarget as ServerTarget


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
