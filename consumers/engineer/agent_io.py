"""The files a containerised coding agent reads and writes: the task in, the result out.

The container gets no connection to our bus, database or Vault, and no network: two JSON
files in a mounted directory beside the workspace, and the metering proxy's socket, are its
whole interface. Neither file ever holds a secret: the model key stays in the proxy on the
host, and the container holds only the run's one-time proxy token (a file beside the socket).

The test container writes a `TestReport` as JSON (`REPORT_FILE`); the host reads it, and
the coding container's result, as untrusted: a regular file (never a symlink, which would
make the host read a file of its own choosing), under a size cap, and never anything richer
than JSON written by model-controlled code.

The socket's host routes speak JSON too: `TESTS_ROUTE` takes `{}` and answers a report;
`MEMORY_ROUTE` takes `{"query": str}` and answers `{"hits": [...]}`, searched on the host in
the scope the host fixed. The container never names a user or project, so a body that does
is read for its query only.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from consumers.engineer.agent import LLMUsage
from consumers.engineer.coder.memory_tool import MAX_QUERY_CHARS
from consumers.engineer.test_runner import FailedTest, TestReport
from contracts.spec import ProjectSpec
from infra.memory_types import MemoryHit, MemoryKind

TASK_FILE = "task.json"
RESULT_FILE = "result.json"
REPORT_FILE = "report.json"
#: The proxy token's file name in the socket directory mounted at `PROXY_DIR`.
TOKEN_FILE = "token"  # noqa: S105 - a file name, not a secret
PROXY_DIR = "/run/llm-proxy"
#: The proxy socket's file name in that directory.
SOCKET_NAME = "llm.sock"
#: The host route (on the proxy socket) that runs the tests in a second container.
TESTS_ROUTE = "/agent/tests"
#: The host route that searches the project's memory (offered when `ContainerTask.memory`).
MEMORY_ROUTE = "/agent/memory"
#: A report larger than this is not read: it did not come from our test runner.
MAX_REPORT_BYTES = 1_000_000
MAX_RESULT_BYTES = 1_000_000

_T = TypeVar("_T")


@dataclass(frozen=True)
class ContainerTask:
    project_id: str
    spec: ProjectSpec
    max_iterations: int
    #: For a revision: the change asked for (as `CodingTask.change`).
    change: str = ""
    #: Whether the host serves `MEMORY_ROUTE` for this run (the agent then offers
    #: `search_memory`); the scope stays on the host.
    memory: bool = False


@dataclass(frozen=True)
class ContainerResult:
    """What the agent in the container claims: its failure fails the run, its success is only
    believed when the host's own checks agree (`ContainerCoder`)."""

    iterations: int
    summary: str
    usage: tuple[LLMUsage, ...]
    reason: str


def write_task(io_dir: Path, task: ContainerTask) -> None:
    payload = {
        "project_id": task.project_id,
        "spec": task.spec.model_dump(mode="json"),
        "max_iterations": task.max_iterations,
        "change": task.change,
        "memory": task.memory,
    }
    (io_dir / TASK_FILE).write_text(json.dumps(payload))


def read_task(io_dir: Path) -> ContainerTask:
    payload = json.loads((io_dir / TASK_FILE).read_text())
    return ContainerTask(
        project_id=str(payload["project_id"]),
        spec=ProjectSpec.model_validate(payload["spec"]),
        max_iterations=int(payload["max_iterations"]),
        change=str(payload.get("change", "")),
        memory=payload.get("memory") is True,
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
    """The agent's result, or None when it wrote none (it crashed or was killed); ValueError
    saying why when what it wrote is not a result."""
    path = io_dir / RESULT_FILE
    if not os.path.lexists(path):
        return None
    payload = _read_json(path, MAX_RESULT_BYTES)
    if not isinstance(payload, dict):
        raise ValueError(f"{RESULT_FILE} is not a JSON object")
    try:
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
    except (KeyError, TypeError, ArithmeticError) as exc:
        raise ValueError(f"{RESULT_FILE} lacks a field or has a wrong one: {exc!r}") from exc


def report_to_json(report: TestReport) -> dict[str, Any]:
    return {
        "passed": report.passed,
        "failed": report.failed,
        "errors": report.errors,
        "skipped": report.skipped,
        "failures": [{"name": f.name, "detail": f.detail} for f in report.failures],
        "output": report.output,
        "passed_tests": list(report.passed_tests),
    }


def report_from_json(payload: Any) -> TestReport:
    """A `TestReport` from untrusted JSON; ValueError when it has not the expected shape."""
    if not isinstance(payload, dict):
        raise ValueError("a test report must be a JSON object")
    try:
        return TestReport(
            passed=int(payload["passed"]),
            failed=int(payload["failed"]),
            errors=int(payload.get("errors", 0)),
            skipped=int(payload.get("skipped", 0)),
            failures=tuple(
                FailedTest(str(item["name"]), str(item["detail"]))
                for item in payload.get("failures", [])
            ),
            output=str(payload.get("output", "")),
            passed_tests=tuple(str(name) for name in payload.get("passed_tests", [])),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a test report lacks a field: {exc}") from exc


def memory_query_from_json(body: Mapping[str, Any]) -> str:
    """The words of a `MEMORY_ROUTE` request; ValueError saying what to send otherwise."""
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError('send {"query": "words to search for"}')
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"a memory query is at most {MAX_QUERY_CHARS} characters")
    return query


def hits_to_json(hits: Sequence[MemoryHit]) -> dict[str, Any]:
    return {
        "hits": [
            {
                "score": hit.score,
                "project_id": str(hit.project_id),
                "kind": hit.kind.value,
                "source_id": hit.source_id,
                "text": hit.text,
                "path": hit.path,
                "commit": hit.commit,
                "start_line": hit.start_line,
                "end_line": hit.end_line,
            }
            for hit in hits
        ]
    }


def hits_from_json(payload: Any) -> list[MemoryHit]:
    """Memory hits from the host's JSON; ValueError when it has not the expected shape."""
    if not isinstance(payload, dict) or not isinstance(payload.get("hits"), list):
        raise ValueError('memory hits must be a JSON object {"hits": [...]}')
    try:
        return [
            MemoryHit(
                score=float(item["score"]),
                project_id=uuid.UUID(str(item["project_id"])),
                kind=MemoryKind(item["kind"]),
                source_id=str(item["source_id"]),
                text=str(item["text"]),
                path=_optional(item.get("path"), str),
                commit=_optional(item.get("commit"), str),
                start_line=_optional(item.get("start_line"), int),
                end_line=_optional(item.get("end_line"), int),
            )
            for item in payload["hits"]
        ]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a memory hit lacks a field: {exc}") from exc


def _optional(value: Any, kind: Callable[[Any], _T]) -> _T | None:
    return None if value is None else kind(value)


def read_report(directory: Path) -> TestReport | None:
    """The report the test container wrote, or None when it wrote none (or garbage)."""
    try:
        return report_from_json(_read_json(directory / REPORT_FILE, MAX_REPORT_BYTES))
    except ValueError:
        return None


def _read_json(path: Path, max_bytes: int) -> Any:
    """JSON from a file a container wrote; ValueError unless it is a regular file (not a
    symlink) of at most `max_bytes` holding JSON."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"{path.name} cannot be opened as a file: {exc.strerror}") from exc
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path.name} is larger than {max_bytes} bytes")
    try:
        return json.loads(data.decode(errors="replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name} is not JSON: {exc}") from exc
