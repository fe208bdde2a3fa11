"""The coding model's tools: files of one workspace, and its test suite.

Every path is resolved against the workspace root and refused when it would leave it
(`..`, absolute paths, symlinks pointing out) or touch `.git`: the model edits the project,
never the host and never the repository's history. Writes, edits and deletes of the protected
files (`guard.PROTECTED_FILES`) are refused too. A refusal is returned to the model as the
tool's answer, so it can correct itself.

`edit_file` replaces one unique snippet, so a small change does not cost a whole file of
output tokens (nor risk dropping the rest of the file); `search` finds where something is
without reading every file.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from consumers.engineer.coder.guard import is_protected
from consumers.engineer.test_runner import TestReport

#: Files larger than this are shown truncated; generated services have small files.
_MAX_READ_CHARS = 60_000
_MAX_LISTED = 500
_HIDDEN_PARTS = frozenset({".git", "__pycache__", ".pytest_cache"})
#: Search answers are bounded: enough to locate code, not a dump of the project.
_MAX_MATCHES = 100
_MAX_MATCH_LINE = 200
_MAX_SEARCHED_BYTES = 1_000_000


def resolve_inside(workspace: Path, relative: str) -> Path:
    """The absolute path of `relative` inside `workspace`; ToolException if it escapes."""
    root = workspace.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise ToolException(f"{relative!r} is outside the workspace; use paths like 'app/main.py'")
    if _HIDDEN_PARTS.intersection(candidate.relative_to(root).parts):
        raise ToolException(f"{relative!r} is managed by the platform and cannot be touched")
    return candidate


def resolve_writable(workspace: Path, relative: str) -> Path:
    """`resolve_inside`, also refusing the protected files (after symlinks are resolved)."""
    target = resolve_inside(workspace, relative)
    if is_protected(target.relative_to(workspace.resolve()).as_posix()):
        raise ToolException(
            f"{relative!r} is protected: the platform relies on it (health endpoint, deployment "
            "settings or acceptance tests) and it cannot be changed; change other files instead"
        )
    return target


def make_workspace_tools(
    workspace: Path, run_tests: Callable[[], Awaitable[TestReport]]
) -> list[BaseTool]:
    """File tools (list, read, search, write, edit, delete) and run_tests, bound to a workspace."""

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

    def search(text: str, path: str = ".") -> str:
        """Find lines containing `text` (plain, case-sensitive) in the files under `path`."""
        if not text:
            raise ToolException("give the text to search for")
        root = workspace.resolve()
        start = resolve_inside(workspace, path)
        candidates = [start] if start.is_file() else _files_under(start)
        matches: list[str] = []
        for file in candidates:
            # Not a FIFO a test left behind (reading it would block), nor a huge artefact.
            if not _regular(file) or file.stat().st_size > _MAX_SEARCHED_BYTES:
                continue
            lines = file.read_text(errors="replace").splitlines()
            for number, line in enumerate(lines, start=1):
                if text in line:
                    shown = line.strip()[:_MAX_MATCH_LINE]
                    matches.append(f"{file.relative_to(root)}:{number}: {shown}")
        if not matches:
            return f"no line contains {text!r}"
        more = len(matches) - _MAX_MATCHES
        return "\n".join(matches[:_MAX_MATCHES]) + (f"\n... and {more} more" if more > 0 else "")

    def write_file(path: str, content: str) -> str:
        """Create or replace one project file with `content` (the whole file)."""
        target = resolve_writable(workspace, path)
        if target.is_dir():
            raise ToolException(f"{path!r} is a directory; give the path of a file in it")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return f"wrote {path} ({len(content)} characters)"

    def edit_file(path: str, old: str, new: str) -> str:
        """Replace the one occurrence of `old` in a file with `new`; `old` must be unique."""
        target = resolve_writable(workspace, path)
        if not target.is_file():
            raise ToolException(f"{path!r} does not exist; create it with write_file")
        try:
            text = target.read_text()
        except UnicodeDecodeError:
            raise ToolException(f"{path!r} is not a text file; it cannot be edited") from None
        count = text.count(old) if old else 0
        if count == 0:
            raise ToolException(
                f"the text to replace does not occur in {path}; read_file it and copy the "
                "lines exactly, indentation included"
            )
        if count > 1:
            raise ToolException(
                f"the text to replace occurs {count} times in {path}; include more of the "
                "surrounding lines so it occurs once"
            )
        target.write_text(text.replace(old, new, 1))
        return f"edited {path}"

    def delete_file(path: str) -> str:
        """Delete one project file (not a directory)."""
        target = resolve_writable(workspace, path)
        if not target.is_file():
            raise ToolException(f"{path!r} is not a file; call list_files to see the project")
        target.unlink()
        return f"deleted {path}"

    async def run_tests_tool() -> str:
        """Install requirements.txt if it changed and run the project's tests with pytest."""
        return (await run_tests()).summary(limit=10)

    return [
        StructuredTool.from_function(list_files, handle_tool_error=True),
        StructuredTool.from_function(read_file, handle_tool_error=True),
        StructuredTool.from_function(search, handle_tool_error=True),
        StructuredTool.from_function(write_file, handle_tool_error=True),
        StructuredTool.from_function(edit_file, handle_tool_error=True),
        StructuredTool.from_function(delete_file, handle_tool_error=True),
        StructuredTool.from_function(
            coroutine=run_tests_tool, name="run_tests",
            description=run_tests_tool.__doc__, handle_tool_error=True,
        ),
    ]


def _files_under(directory: Path) -> list[Path]:
    """Regular files under `directory`, sorted, never following a symlinked directory out."""
    found: list[Path] = []
    for parent, dirs, names in os.walk(directory, followlinks=False):
        dirs[:] = sorted(name for name in dirs if name not in _HIDDEN_PARTS)
        found.extend(Path(parent, name) for name in sorted(names))
    return found


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()
