"""Entry point inside the coding container: run the LangGraph loop on /workspace.

Usage (the image's command): `python -m consumers.engineer.container_entry /workspace /agent-io`.
The container has no network. The LLM settings arrive as `ORCH_LLM__*` variables (no key);
the model is reached through the host's metering proxy, whose socket and the run's one-time
token are mounted at /run/llm-proxy. The `run_tests` tool asks the host, over that socket, to
run the suite in a second container: model-written code never runs in this one. When the host
offers memory (`ContainerTask.memory`), `search_memory` asks it over the same socket; the
host chooses the scope, this side only sends words. The result goes to
`/agent-io/result.json`; its token counts are empty because the proxy recorded every call as
it happened. The loop here has no app check: starting the app is the host's, in a container
of its own, after this one is gone (and the host takes nothing here on trust).
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import httpx

from consumers.engineer.agent import CodingTask
from consumers.engineer.agent_io import (
    MEMORY_ROUTE,
    PROXY_DIR,
    SOCKET_NAME,
    TESTS_ROUTE,
    TOKEN_FILE,
    ContainerResult,
    hits_from_json,
    read_task,
    report_from_json,
    write_result,
)
from consumers.engineer.coder.memory_tool import SEARCH_TIMEOUT_SECONDS
from consumers.engineer.langgraph_coder import LangGraphCoder
from consumers.engineer.llm_proxy.forwarder import loopback_to_unix
from consumers.engineer.settings import EngineerSettings
from consumers.engineer.test_runner import TestReport
from infra.llm import build_chat_model, proxy_base_url
from infra.memory_search import MemoryUnavailable
from infra.memory_types import MemoryHit
from infra.settings import LLMSettings, Settings


class HostSocket:
    """The host's routes on the proxy socket, called with the run's token."""

    def __init__(self, socket_path: Path, token: str) -> None:
        self._socket_path = socket_path
        self._token = token

    async def post(self, route: str, body: dict[str, Any], wait_seconds: float) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(uds=str(self._socket_path))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://host", timeout=wait_seconds
        ) as client:
            return await client.post(
                route, json=body, headers={"Authorization": f"Bearer {self._token}"}
            )


class HostTestRunner:
    """Runs the tests through the host (which starts the test container), over the socket."""

    __test__ = False

    def __init__(self, host: HostSocket) -> None:
        self._host = host

    async def run(self, workspace: Path) -> TestReport:
        answer = await self._host.post(TESTS_ROUTE, {}, wait_seconds=900.0)
        answer.raise_for_status()
        return report_from_json(answer.json())


class HostMemory:
    """The project's memory as the container reaches it: words to the host, hits back.

    It holds no scope and sends none: the host searches the `ProjectMemory` it fixed for this
    run, whatever a request says. A refusal or an unreachable host is `MemoryUnavailable`,
    which `search_memory` turns into its error text.
    """

    def __init__(self, host: HostSocket) -> None:
        self._host = host

    async def search(self, text: str) -> list[MemoryHit]:
        try:
            answer = await self._host.post(
                MEMORY_ROUTE, {"query": text}, wait_seconds=SEARCH_TIMEOUT_SECONDS + 5.0
            )
        except httpx.HTTPError as exc:
            raise MemoryUnavailable(f"the host did not answer: {type(exc).__name__}") from exc
        if answer.status_code != 200:
            raise MemoryUnavailable(f"the host answered {answer.status_code}: {answer.text[:300]}")
        try:
            return hits_from_json(answer.json())
        except ValueError as exc:
            raise MemoryUnavailable(f"the host's answer is not memory hits: {exc}") from exc


async def run(workspace: Path, io_dir: Path, settings: LLMSettings, proxy_dir: Path) -> int:
    task = read_task(io_dir)
    token = (proxy_dir / TOKEN_FILE).read_text().strip()
    socket_path = proxy_dir / SOCKET_NAME
    async with loopback_to_unix(socket_path) as port:
        proxied = settings.model_copy(
            update={"base_url": proxy_base_url(settings, f"http://127.0.0.1:{port}")}
        )
        llm = build_chat_model(proxied, token)
        if llm is None:
            write_result(
                io_dir, ContainerResult(0, "", (), "the coding container has no LLM provider")
            )
            return 2
        # The run stops on its own clock before the host kills the container on its longer
        # one (`container_timeout_seconds`), so the host gets a result with the reason.
        host = HostSocket(socket_path, token)
        coder = LangGraphCoder(
            llm,
            HostTestRunner(host),
            settings,
            time_limit_seconds=EngineerSettings().coder_time_limit_seconds,
        )
        outcome = await coder.run(
            CodingTask(
                task.project_id,
                task.spec,
                workspace,
                task.max_iterations,
                change=task.change,
                memory=HostMemory(host) if task.memory else None,
            ),
            _no_heartbeat,
        )
    write_result(io_dir, ContainerResult(outcome.iterations, outcome.summary, (), outcome.reason))
    return 0


async def _no_heartbeat() -> None:
    """Inside the container there is no broker; the host sends the heartbeats."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(
            "usage: python -m consumers.engineer.container_entry WORKSPACE IO_DIR", file=sys.stderr
        )
        return 64
    try:
        return asyncio.run(run(Path(args[0]), Path(args[1]), Settings().llm, Path(PROXY_DIR)))
    except Exception as exc:
        # The host reads the reason (a proxy refusal wins over it); the traceback goes to logs.
        traceback.print_exc()
        write_result(Path(args[1]), ContainerResult(0, "", (), f"{type(exc).__name__}: {exc}"))
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: a client library's leftover non-daemon thread must not keep the container
    # (and the host's wait for it) alive after the work is done.
    os._exit(code)
