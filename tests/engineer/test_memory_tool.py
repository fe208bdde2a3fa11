"""The coder's `search_memory` tool: the project's own indexed code, never another project's.

The engineer step runs with the real store (qdrant-client local mode) behind
`LocalMemorySearch`, a real git remote, and the scripted OpenAI-compatible server; what is
asserted is what the tool answered the model.
"""

from __future__ import annotations

import uuid

from consumers.engineer.coder.memory_tool import MAX_SNIPPET_CHARS, ProjectMemory, make_memory_tool
from consumers.engineer.service import EngineerResult, EngineerService
from consumers.engineer.workspace import GitWorkspaces
from contracts.events import CodeGenerated, CodeRequested
from infra.memory import MemoryDocument, MemoryStore, Scope, chunk_file
from infra.memory_search import LocalMemorySearch
from tests.engineer.conftest import BROKEN_FILES, RepoFactory, code_requested, no_heartbeat
from tests.engineer.test_langgraph_coder import RIGHT_CALC, coder, tool_contents
from tests.fakes.openai_server import Reply, ScriptedOpenAI

ALICE, BOB = "telegram:1001", "telegram:2002"
EARLIER_COMMIT = "a" * 40


def code(user: str, project: uuid.UUID, path: str, text: str) -> MemoryDocument:
    """A file as the indexer stores it: its first chunk at an earlier commit."""
    first = chunk_file(path, text.encode())[0]
    return MemoryDocument.from_code(user, project, EARLIER_COMMIT, first)


async def run_with_memory(
    server: ScriptedOpenAI, store: MemoryStore, request: CodeRequested, owner: str | None
) -> tuple[EngineerResult, set[str]]:
    """The engineer step with memory, and the tools the model was offered."""
    service = EngineerService(
        coder(server), GitWorkspaces(), max_iterations=1, memory=LocalMemorySearch(store)
    )
    result = await service.handle(request, no_heartbeat, owner=owner)
    return result, {tool["function"]["name"] for tool in server.requests[0]["tools"]}


async def test_search_memory_answers_the_projects_code_and_never_another_projects(
    make_repo: RepoFactory, memory_store: MemoryStore
) -> None:
    url, base = make_repo(BROKEN_FILES)
    request = code_requested(url, base)
    # Text that matches the query better lives in Alice's other project and in Bob's copy of
    # this very project id: the scope keeps both out.
    memory_store.upsert(
        [
            code(ALICE, request.project_id, "app/calc.py", RIGHT_CALC),
            code(ALICE, uuid.uuid4(), "app/other.py", "# other-project subtract subtract subtract"),
            code(BOB, request.project_id, "app/bob.py", "# bob-code subtract subtract subtract"),
        ]
    )
    with ScriptedOpenAI() as server:
        server.replies(
            Reply.tool_call("search_memory", {"query": "subtract"}),
            Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
            Reply.text("Restored subtract(a, b) from the earlier revision"),
        )
        result, offered = await run_with_memory(server, memory_store, request, ALICE)
        found = tool_contents(server.requests[1])[0]

    assert "search_memory" in offered
    assert found.startswith(f"== app/calc.py:1-6 (commit {EARLIER_COMMIT[:12]})\n")
    assert "return a - b" in found
    assert "other-project" not in found and "bob-code" not in found
    assert isinstance(result.event, CodeGenerated), result.event


async def test_a_project_of_no_known_owner_gets_no_memory_tool(
    make_repo: RepoFactory, memory_store: MemoryStore
) -> None:
    url, base = make_repo(BROKEN_FILES)
    with ScriptedOpenAI() as server:
        server.replies(
            Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
            Reply.text("Implemented subtract(a, b)"),
        )
        _, offered = await run_with_memory(server, memory_store, code_requested(url, base), None)
    assert "search_memory" not in offered
    assert "search" in offered


async def test_answers_are_bounded_and_memory_down_is_an_answer_not_a_crash(
    memory_store: MemoryStore,
) -> None:
    project = uuid.uuid4()
    memory_store.upsert(
        [code(ALICE, project, f"app/m{i}.py", ("handler " * 40 + "\n") * 59) for i in range(9)]
    )
    tool = make_memory_tool(ProjectMemory(LocalMemorySearch(memory_store), Scope(ALICE, project)))

    answer = await tool.ainvoke({"query": "handler"})
    assert answer.count("== app/m") == 5
    assert answer.count("... truncated") == 5
    assert len(answer) < 5 * (MAX_SNIPPET_CHARS + 200)

    memory_store.close()
    down = await tool.ainvoke({"query": "handler"})
    assert down.startswith("project memory is unavailable right now")
