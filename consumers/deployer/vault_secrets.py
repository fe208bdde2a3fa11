"""`VaultSecretSource`: the deployer's view of Vault KV v2.

Its AppRole reads project and server secrets, and may delete a project's secrets (never write
them): archiving a project removes them once its service is gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Protocol

from infra.vault import SecretNotFound, project_secret_path


class SecretReader(Protocol):
    """The part of `infra.vault.VaultClient` the deployer uses."""

    async def read_secret(self, path: str) -> dict[str, str]: ...

    async def list_secrets(self, path: str) -> list[str]: ...

    async def delete_secret(self, path: str) -> None: ...


class VaultSecretSource:
    """Absent secrets are None (the service decides what that means); other errors propagate."""

    def __init__(self, client: SecretReader) -> None:
        self._client = client

    async def read(self, path: str) -> Mapping[str, str] | None:
        try:
            return await self._client.read_secret(path)
        except SecretNotFound:
            return None

    async def delete_project_secrets(self, project_id: uuid.UUID) -> list[str]:
        """Every version and the metadata of each secret under `projects/<id>/`; absent is fine."""
        names = sorted(await self._client.list_secrets(f"projects/{project_id}"))
        for name in names:
            await self._client.delete_secret(project_secret_path(str(project_id), name))
        return names
