"""The coding model's tools: files of one workspace, and its test suite.

Every path is resolved against the workspace root and refused when it would leave it
(`..`, absolute paths, symlinks pointing out) or touch `.git`: the model edits the project,
never the host and never the repository's history. A refusal is returned to the model as the
tool's answer, so it can correct itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from consumers.engineer.test_runner import TestReport

#: Files larger than this are shown truncated; generated services have small files.
_MAX_READ_CHARS = 60_000
_MAX_LISTED = 500
_HIDDEN_PARTS = frozenset({".git", "__pycache__", ".pytest_cache"})


def resolve_inside(workspace: Path, relative: str) -> Path:
    """The absolute path of `relative` inside `workspace`; ToolException if it escapes."""
    root = workspace.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise ToolException(f"{relative!r} is outside the workspace; use paths like 'app/main.py'")
    if _HIDDEN_PARTS.intersection(candidate.relative_to(root).parts):
        raise ToolException(f"{relative!r} is managed by the platform and cannot be touched")
    return candidate


def make_workspace_tools(
    workspace: Path, run_tests: Callable[[], Awaitable[TestReport]]
) -> list[BaseTool]:
    """list_files, read_file, write_file and run_tests, bound to one workspace."""

    def list_files() -> str:
        """List every file of the project, one relative path per line."""
        root = workspace.resolve()
        files = sorted(
            str(path.relative_to(root))
            for path in root.rglob("*")
            if path.is_file() and not _HIDDEN_PARTS.intersection(path.relative_to(root).parts)
        )
        shown = files[:_MAX_LISTED]
        more = f"\n... and {len(files) - _MAX_LISTED} more" if len(files) > _MAX_LISTED else ""
        return "\n".join(shown) + more

    def read_file(path: str) -> str:
        """Return the text of one project file, e.g. 'app/main.py'."""
        target = resolve_inside(workspace, path)
        if not target.is_file():
            raise ToolException(f"{path!r} does not exist; call list_files to see the project")
        text = target.read_text(errors="replace")
        if len(text) > _MAX_READ_CHARS:
            return text[:_MAX_READ_CHARS] + f"\n... truncated ({len(text)} characters)"
        return text

    def write_file(path: str, content: str) -> str:
        """Create or replace one project file with `content` (the whole file)."""
        target = resolve_inside(workspace, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return f"wrote {path} ({len(content)} characters)"

    async def run_tests_tool() -> str:
        """Install requirements.txt if it changed and run the project's tests with pytest."""
        return (await run_tests()).summary(limit=10)

    return [
        StructuredTool.from_function(list_files, handle_tool_error=True),
        StructuredTool.from_function(read_file, handle_tool_error=True),
        StructuredTool.from_function(write_file, handle_tool_error=True),
        StructuredTool.from_function(
            coroutine=run_tests_tool, name="run_tests",
            description=run_tests_tool.__doc__, handle_tool_error=True,
        ),
    ]
