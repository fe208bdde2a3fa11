"""`VaultSecretSource`: the deployer's read-only view of Vault KV v2 (its AppRole may only read)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from infra.vault import SecretNotFound


class SecretReader(Protocol):
    """The part of `infra.vault.VaultClient` the deployer uses."""

    async def read_secret(self, path: str) -> dict[str, str]: ...


class VaultSecretSource:
    """Absent secrets are None (the service decides what that means); other errors propagate."""

    def __init__(self, client: SecretReader) -> None:
        self._client = client

    async def read(self, path: str) -> Mapping[str, str] | None:
        try:
            return await self._client.read_secret(path)
        except SecretNotFound:
            return None
