"""The coding model's memory tool: search the project's indexed code and its specs.

`search_memory` finds code by meaning-ish words (lexical BM25 over identifiers split at
camelCase and underscores) rather than by exact text like `search`, and it reaches what the
workspace no longer holds: earlier revisions of the code and the spec versions that led here.
It is scoped to the one project being built, of its owner (`Scope(user_id, project_id)`), so
nothing of another project or user can reach the prompt, however well its text matches.

Answers are bounded (`MAX_HITS` pieces of at most `MAX_SNIPPET_CHARS`), each headed by its
path, line range and commit, so the model reads the current file before editing it: indexed
code may be from an earlier commit. A memory that is down or slow is the tool's error, which
the model reads and works around with `search` and `read_file`; the run never fails for it.

The tool is built over any `ProjectSearch`: words in, this project's hits out, with no scope
to choose. The in-process coder hands it a `ProjectMemory` (the scope fixed on the host). The
container coder's loop runs with no network and one socket to the host, so inside the
container it is a client that posts the words to the host's memory route
(`container_entry.HostMemory`); the host answers from its own `ProjectMemory`, so the scope
never crosses the socket and nothing the container sends can widen it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from infra.memory_search import MemorySearch
from infra.memory_types import MemoryHit, MemoryKind, Scope

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

#: The project's own code and the specs it was built from; answers and outcomes are the analyst's.
MEMORY_KINDS = (MemoryKind.CODE, MemoryKind.SPEC, MemoryKind.SPEC_REVISION)
MAX_HITS = 5
MAX_SNIPPET_CHARS = 2000
#: Words to search for, not a file: a longer query is refused before any search.
MAX_QUERY_CHARS = 500
SEARCH_TIMEOUT_SECONDS = 10.0


class ProjectSearch(Protocol):
    """The one project's memory, searched by words; the scope is the implementation's own."""

    async def search(self, text: str) -> list[MemoryHit]:
        """At most `MAX_HITS` hits, best first, each text at most `MAX_SNIPPET_CHARS` (marked)."""
        ...


@dataclass(frozen=True)
class ProjectMemory:
    """Memory search fixed to one project of one owner: the only memory a coder is handed."""

    memory: MemorySearch
    scope: Scope

    def __post_init__(self) -> None:
        if self.scope.project_id is None:
            raise ValueError("a coder's memory is scoped to the project being built")

    async def search(self, text: str) -> list[MemoryHit]:
        async with asyncio.timeout(SEARCH_TIMEOUT_SECONDS):
            hits = await self.memory.search(self.scope, text, kinds=MEMORY_KINDS, limit=MAX_HITS)
        return [_bounded(hit) for hit in hits[:MAX_HITS]]


def make_memory_tool(memory: ProjectSearch) -> BaseTool:
    """`search_memory`, bound to one project's memory.

    LangChain is imported here, by the LLM coder that builds the tool: the offline engineer
    process, which only needs `ProjectSearch` and `ProjectMemory`, never loads it.
    """
    from langchain_core.tools import StructuredTool, ToolException

    async def search_memory(query: str) -> str:
        """Search this project's indexed code (including earlier revisions) and its specs by
        words, e.g. 'expense total by category'. Answers path:lines (commit) and a snippet;
        the code may be older than the workspace, so read_file a path before editing it."""
        if not query.strip():
            raise ToolException("give words to search for, e.g. 'weekly report handler'")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolException(f"give at most {MAX_QUERY_CHARS} characters of words to search for")
        try:
            hits = await memory.search(query)
        except Exception as exc:
            raise ToolException(
                f"project memory is unavailable right now ({type(exc).__name__}); use search "
                "and read_file on the workspace instead"
            ) from exc
        if not hits:
            return f"nothing in this project's memory matches {query!r}"
        return "\n\n".join(_shown(hit) for hit in hits)

    return StructuredTool.from_function(
        coroutine=search_memory,
        name="search_memory",
        description=search_memory.__doc__,
        handle_tool_error=True,
    )


def _shown(hit: MemoryHit) -> str:
    if hit.kind is MemoryKind.CODE and hit.path:
        where = f"{hit.path}:{hit.start_line}-{hit.end_line}"
        head = f"{where} (commit {hit.commit[:12]})" if hit.commit else where
    else:
        head = f"{hit.kind.value} {hit.source_id}"
    return f"== {head}\n{hit.text}"


def _bounded(hit: MemoryHit) -> MemoryHit:
    if len(hit.text) <= MAX_SNIPPET_CHARS:
        return hit
    text = hit.text[:MAX_SNIPPET_CHARS] + f"\n... truncated ({len(hit.text)} characters)"
    return dataclasses.replace(hit, text=text)
