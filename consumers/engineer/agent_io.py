"""The files a containerised coding agent reads and writes: the task in, the result out.

The container gets no connection to our bus, database or Vault; two JSON files in a mounted
directory beside the workspace are its whole interface. Neither file ever holds a secret: the
model key reaches the container as an environment variable only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from consumers.engineer.agent import LLMUsage
from contracts.spec import ProjectSpec

TASK_FILE = "task.json"
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class ContainerTask:
    project_id: str
    spec: ProjectSpec
    max_iterations: int


@dataclass(frozen=True)
class ContainerResult:
    """What the agent in the container claims; the host re-runs the tests before believing it."""

    iterations: int
    summary: str
    usage: tuple[LLMUsage, ...]
    reason: str


def write_task(io_dir: Path, task: ContainerTask) -> None:
    payload = {
        "project_id": task.project_id,
        "spec": task.spec.model_dump(mode="json"),
        "max_iterations": task.max_iterations,
    }
    (io_dir / TASK_FILE).write_text(json.dumps(payload))


def read_task(io_dir: Path) -> ContainerTask:
    payload = json.loads((io_dir / TASK_FILE).read_text())
    return ContainerTask(
        project_id=str(payload["project_id"]),
        spec=ProjectSpec.model_validate(payload["spec"]),
        max_iterations=int(payload["max_iterations"]),
    )


def write_result(io_dir: Path, result: ContainerResult) -> None:
    payload = {
        "iterations": result.iterations,
        "summary": result.summary,
        "reason": result.reason,
        "usage": [
            {
                "model": usage.model,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cost_usd": str(usage.cost_usd),
            }
            for usage in result.usage
        ],
    }
    (io_dir / RESULT_FILE).write_text(json.dumps(payload))


def read_result(io_dir: Path) -> ContainerResult | None:
    """The agent's result, or None when it wrote none (it crashed or was killed)."""
    path = io_dir / RESULT_FILE
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    return ContainerResult(
        iterations=int(payload.get("iterations", 0)),
        summary=str(payload.get("summary", "")),
        reason=str(payload.get("reason", "")),
        usage=tuple(
            LLMUsage(
                model=str(item["model"]),
                prompt_tokens=int(item["prompt_tokens"]),
                completion_tokens=int(item["completion_tokens"]),
                cost_usd=Decimal(str(item["cost_usd"])),
            )
            for item in payload.get("usage", [])
        ),
    )
