"""How a step reads project memory, whoever holds the store.

The analyst and the engineer search memory through `MemorySearch`; they never open Qdrant
themselves. In the embedded default qdrant-client's local mode lets one process hold the store
(the indexer), so their searches travel to it over the bus; with a Qdrant server the same
request/reply path serves too, so every deployment reads the same way. `LocalMemorySearch`
wraps a `MemoryStore` held in this process (the indexer's own reads, and tests).

Every search names a `Scope`: there is no unscoped read (see `infra.memory._scoped_filter`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from infra.memory_types import MemoryHit, MemoryKind, Scope

if TYPE_CHECKING:
    # Only `LocalMemorySearch` holds a store; the coding container imports this module
    # (for `MemorySearch` and `MemoryUnavailable`) without qdrant-client.
    from infra.memory import MemoryStore


class MemorySearch(Protocol):
    async def search(
        self, scope: Scope, text: str, *, kinds: Sequence[MemoryKind] = (), limit: int = 5
    ) -> list[MemoryHit]:
        """The scope's memory that best matches `text`, best first; empty when nothing matches."""
        ...


class LocalMemorySearch:
    """A `MemorySearch` over a store this process holds; Qdrant's calls run in a thread."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def search(
        self, scope: Scope, text: str, *, kinds: Sequence[MemoryKind] = (), limit: int = 5
    ) -> list[MemoryHit]:
        return await asyncio.to_thread(self._store.search, scope, text, kinds=kinds, limit=limit)


class MemoryUnavailable(RuntimeError):
    """Memory could not be searched (the indexer did not answer, or refused the request).

    Memory is optional to every step: a caller logs this once and goes on without it.
    """
