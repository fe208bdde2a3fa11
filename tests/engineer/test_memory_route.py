"""`search_memory` in container mode: the host's memory route on the proxy's UNIX socket.

The proxy is the real one on a real socket, the memory the real store (qdrant-client local
mode) behind `LocalMemorySearch` and the host's `ProjectMemory`; the caller is the
container's own client (`HostMemory`) or raw HTTP over the socket, as model-written code in
the container could send it. What is asserted: the scope is the host's whatever the body
says, bad bodies are refused with a reason, the token is required, and a memory that is down
is the tool's answer.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from consumers.engineer.agent_io import MEMORY_ROUTE
from consumers.engineer.coder.memory_tool import MAX_QUERY_CHARS, ProjectMemory, make_memory_tool
from consumers.engineer.container_coder import memory_route
from consumers.engineer.container_entry import HostMemory, HostSocket
from consumers.engineer.llm_proxy.run import ProxyLauncher, ProxyRun
from consumers.engineer.llm_proxy.server import MAX_HOST_ROUTE_BODY_BYTES
from infra.memory import MemoryStore, Scope
from infra.memory_search import LocalMemorySearch
from infra.settings import LLMSettings
from tests.engineer.test_container_coder import MemoryLedger
from tests.engineer.test_langgraph_coder import RIGHT_CALC
from tests.engineer.test_memory_tool import ALICE, BOB, EARLIER_COMMIT, code

PROJECT = uuid.UUID("6d1f7c1e-0000-4000-8000-000000000010")
OTHER_PROJECT = uuid.UUID("6d1f7c1e-0000-4000-8000-000000000011")


async def no_key() -> str:
    return "sk-never-used-by-host-routes"


@pytest.fixture
async def proxied(memory_store: MemoryStore, tmp_path: Path) -> AsyncIterator[ProxyRun]:
    """The run's proxy on a socket, serving Alice's memory of `PROJECT` as the host route.

    Text matching 'subtract' better lives in Alice's other project and in Bob's copy of this
    very project id: only the host's scope keeps them out.
    """
    memory_store.upsert(
        [
            code(ALICE, PROJECT, "app/calc.py", RIGHT_CALC),
            code(ALICE, OTHER_PROJECT, "app/other.py", "# other-project subtract subtract"),
            code(BOB, PROJECT, "app/bob.py", "# bob-code subtract subtract subtract"),
        ]
    )
    memory = ProjectMemory(LocalMemorySearch(memory_store), Scope(ALICE, PROJECT))
    launcher = ProxyLauncher(LLMSettings(provider="openai"), no_key)
    async with launcher.on_socket(
        tmp_path / "sock", MemoryLedger(), {MEMORY_ROUTE: memory_route(memory)}
    ) as run:
        yield run


def over_socket(run: ProxyRun) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(run.socket_path))
    return httpx.AsyncClient(transport=transport, base_url="http://host")


async def test_the_containers_tool_gets_the_projects_code_through_the_socket(
    proxied: ProxyRun,
) -> None:
    assert proxied.socket_path is not None
    tool = make_memory_tool(HostMemory(HostSocket(proxied.socket_path, proxied.token)))

    found = await tool.ainvoke({"query": "subtract"})

    assert found.startswith(f"== app/calc.py:1-6 (commit {EARLIER_COMMIT[:12]})\n")
    assert "return a - b" in found
    assert "other-project" not in found and "bob-code" not in found


async def test_a_body_naming_another_scope_is_read_for_its_query_only(
    proxied: ProxyRun,
) -> None:
    body = {
        "query": "subtract",
        "user_id": BOB,
        "project_id": str(OTHER_PROJECT),
        "scope": {"user_id": BOB, "project_id": str(OTHER_PROJECT)},
        "kinds": ["answer", "outcome"],
        "limit": 1000,
    }
    async with over_socket(proxied) as client:
        answer = await client.post(
            MEMORY_ROUTE, json=body, headers={"Authorization": f"Bearer {proxied.token}"}
        )

    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert [(hit["project_id"], hit["path"]) for hit in hits] == [(str(PROJECT), "app/calc.py")]
    assert "bob-code" not in answer.text and "other-project" not in answer.text


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        (b"", 400, 'send {"query": "words to search for"}'),
        (b"{not json", 400, "is not JSON; send a JSON object"),
        (b'["subtract"]', 400, "must be a JSON object"),
        (b'{"query": 5}', 400, 'send {"query": "words to search for"}'),
        (b'{"query": "   "}', 400, 'send {"query": "words to search for"}'),
        (
            b'{"query": "%s"}' % (b"w" * (MAX_QUERY_CHARS + 1)),
            400,
            f"at most {MAX_QUERY_CHARS} characters",
        ),
        (
            b'{"query": "subtract", "pad": "%s"}' % (b"x" * MAX_HOST_ROUTE_BODY_BYTES),
            413,
            f"at most {MAX_HOST_ROUTE_BODY_BYTES} bytes of JSON",
        ),
    ],
    ids=["empty", "not-json", "array", "query-not-text", "blank-query", "long-query", "huge"],
)
async def test_a_bad_body_is_refused_with_what_to_send(
    proxied: ProxyRun, content: bytes, status: int, reason: str
) -> None:
    async with over_socket(proxied) as client:
        answer = await client.post(
            MEMORY_ROUTE,
            content=content,
            headers={
                "Authorization": f"Bearer {proxied.token}",
                "Content-Type": "application/json",
            },
        )
    assert answer.status_code == status
    assert reason in answer.json()["error"]["message"]


async def test_a_huge_chunked_body_is_refused_without_a_length(proxied: ProxyRun) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "subtract", "pad": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    async with over_socket(proxied) as client:
        answer = await client.post(
            MEMORY_ROUTE, content=chunks(), headers={"Authorization": f"Bearer {proxied.token}"}
        )
    assert answer.status_code == 413


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer guess"}, {"x-api-key": ""}])
async def test_without_the_runs_token_the_route_answers_401(
    proxied: ProxyRun, headers: dict[str, str]
) -> None:
    async with over_socket(proxied) as client:
        answer = await client.post(MEMORY_ROUTE, json={"query": "subtract"}, headers=headers)
    assert answer.status_code == 401
    assert "subtract" not in answer.text


async def test_memory_down_is_the_tools_answer_not_a_crash(
    proxied: ProxyRun, memory_store: MemoryStore
) -> None:
    assert proxied.socket_path is not None
    tool = make_memory_tool(HostMemory(HostSocket(proxied.socket_path, proxied.token)))
    memory_store.close()

    down = await tool.ainvoke({"query": "subtract"})
    async with over_socket(proxied) as client:
        answer = await client.post(
            MEMORY_ROUTE,
            json={"query": "subtract"},
            headers={"Authorization": f"Bearer {proxied.token}"},
        )

    assert down.startswith("project memory is unavailable right now (MemoryUnavailable)")
    assert answer.status_code == 503
    assert answer.json()["error"]["message"].startswith("project memory is unavailable")
