"""Entry point inside the coding container: run the LangGraph loop on /workspace.

Usage (the image's command): `python -m consumers.engineer.container_entry /workspace /agent-io`.
The LLM settings arrive as `ORCH_LLM__*` variables and the key as `ORCH_CODER_API_KEY`, which
is removed from the environment before any generated code runs. The result goes to
`/agent-io/result.json`; the host re-runs the tests before it believes it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from consumers.engineer.agent import CodingTask
from consumers.engineer.agent_io import ContainerResult, read_task, write_result
from consumers.engineer.container_coder import API_KEY_ENV
from consumers.engineer.langgraph_coder import LangGraphCoder
from consumers.engineer.test_runner import PytestRunner
from infra.llm import build_chat_model
from infra.settings import LLMSettings, Settings


async def _no_heartbeat() -> None:
    """Inside the container there is no broker; the host sends the heartbeats."""


async def run(workspace: Path, io_dir: Path, settings: LLMSettings, api_key: str) -> int:
    task = read_task(io_dir)
    llm = build_chat_model(settings, api_key)
    if llm is None:
        write_result(io_dir, ContainerResult(0, "", (), "the coding container has no LLM provider"))
        return 2
    # The venv goes to the container's own /tmp: the workspace's parent is `/` here.
    with tempfile.TemporaryDirectory(prefix="coder-") as scratch:
        coder = LangGraphCoder(llm, PytestRunner(scratch=Path(scratch)), settings)
        outcome = await coder.run(
            CodingTask(task.project_id, task.spec, workspace, task.max_iterations), _no_heartbeat
        )
    write_result(
        io_dir, ContainerResult(outcome.iterations, outcome.summary, outcome.usage, outcome.reason)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m consumers.engineer.container_entry WORKSPACE IO_DIR",
              file=sys.stderr)
        return 64
    api_key = os.environ.pop(API_KEY_ENV, "")
    return asyncio.run(run(Path(args[0]), Path(args[1]), Settings().llm, api_key))


if __name__ == "__main__":
    sys.exit(main())
