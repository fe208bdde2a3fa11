"""The indexer's answer to `memory.search`: core NATS request/reply over the store it holds.

The analyst and the engineer ask (`infra.memory_client.BusMemorySearch`); replicas of the
indexer answer in one queue group, so each request gets one answer. Every search is built by
`MemoryStore.search`, which always filters by the request's user (and project, if named): a
request can only ever read the scope it names, and only the analyst's and engineer's NATS users
may send one (`infra.bus.permissions`). A malformed request gets an error reply at once
rather than leaving the asker to time out.
"""

from __future__ import annotations

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from contracts.fields import MAX_NAME
from contracts.memory import MemorySearchReply, MemorySearchRequest
from contracts.topology import MEMORY_SEARCH_QUEUE, MEMORY_SEARCH_SUBJECT
from infra.memory import MemoryKind, Scope
from infra.memory_client import hit_to_wire
from infra.memory_search import MemorySearch

log = structlog.get_logger(__name__)


class SearchResponder:
    """Subscribes to `memory.search` and answers each request from `memory`."""

    def __init__(self, memory: MemorySearch) -> None:
        self._memory = memory

    async def start(self, nc: Client) -> None:
        """Answer from now on; the connection's drain at shutdown ends the subscription after
        the requests in hand are answered."""
        await nc.subscribe(MEMORY_SEARCH_SUBJECT, queue=MEMORY_SEARCH_QUEUE, cb=self._answer)

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply:
            return  # a publish, not a request: nobody waits for an answer
        reply = await self.reply_to(msg.data)
        await msg.respond(reply.model_dump_json().encode())

    async def reply_to(self, data: bytes) -> MemorySearchReply:
        try:
            request = MemorySearchRequest.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "request"
            return _refused(f"malformed memory search ({where}: {first['msg']})")
        scope = Scope(request.user_id, request.project_id)
        try:
            hits = await self._memory.search(
                scope,
                request.text,
                kinds=[MemoryKind(kind) for kind in request.kinds],
                limit=request.limit,
            )
        except Exception as exc:  # the asker is told; memory is optional to it
            log.exception("memory.search_failed")
            return _refused(f"the memory store failed: {type(exc).__name__}")
        return MemorySearchReply(hits=tuple(hit_to_wire(hit) for hit in hits))


def _refused(reason: str) -> MemorySearchReply:
    return MemorySearchReply(error=reason[:MAX_NAME])
