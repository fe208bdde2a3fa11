"""`BusMemorySearch`: the analyst's and engineer's way to memory, a request to the indexer.

The indexer is the one process that holds the store (qdrant-client's local mode serves one
process), so a step sends a `MemorySearchRequest` on `memory.search` (core NATS, not
JetStream) and waits for the reply on its own inbox. The same path serves a Qdrant server
deployment. When the indexer does not answer in time, is not running, or refuses the request,
`MemoryUnavailable` says so: memory is optional, and the caller goes on without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from contracts.memory import MemorySearchHit, MemorySearchReply, MemorySearchRequest
from contracts.topology import MEMORY_SEARCH_SUBJECT
from infra.memory_search import MemoryUnavailable
from infra.memory_types import MemoryHit, MemoryKind, Scope

#: Long enough for a search under load (milliseconds normally), short enough that a step
#: whose indexer is down loses little time before it goes on without memory.
DEFAULT_TIMEOUT_SECONDS = 2.0


class BusMemorySearch:
    """A `MemorySearch` that asks the indexer over NATS request/reply."""

    def __init__(self, nc: Client, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._nc = nc
        self._timeout = timeout

    async def search(
        self, scope: Scope, text: str, *, kinds: Sequence[MemoryKind] = (), limit: int = 5
    ) -> list[MemoryHit]:
        request = MemorySearchRequest(
            user_id=scope.user_id,
            project_id=scope.project_id,
            text=text,
            kinds=tuple(kind.value for kind in kinds),
            limit=limit,
        )
        try:
            msg = await self._nc.request(
                MEMORY_SEARCH_SUBJECT, request.model_dump_json().encode(), timeout=self._timeout
            )
        except NoRespondersError:
            raise MemoryUnavailable(
                f"no indexer is running to answer {MEMORY_SEARCH_SUBJECT}; start it "
                "(`orchestrator up` does) to give steps their memory"
            ) from None
        except NatsTimeoutError:
            raise MemoryUnavailable(
                f"the indexer did not answer {MEMORY_SEARCH_SUBJECT} within {self._timeout:g} s"
            ) from None
        try:
            reply = MemorySearchReply.model_validate_json(msg.data)
        except ValidationError as exc:
            raise MemoryUnavailable(f"the indexer's reply was not a search reply: {exc}") from None
        if reply.error is not None:
            raise MemoryUnavailable(f"the indexer refused the search: {reply.error}")
        return [hit_from_wire(hit) for hit in reply.hits]


def hit_from_wire(hit: MemorySearchHit) -> MemoryHit:
    return MemoryHit(**{**hit.model_dump(), "kind": MemoryKind(hit.kind)})


def hit_to_wire(hit: MemoryHit) -> MemorySearchHit:
    return MemorySearchHit.model_validate({**asdict(hit), "kind": hit.kind.value})
