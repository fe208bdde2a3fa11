"""A bounded map of the workspace for the coder's first message: every file's path and size.

Without it a model's first several calls are `list_files` and `read_file` on the obvious
files, each re-sending the conversation. A scaffold has about twenty files, so the whole map
is a few hundred tokens; a live project's checkout may be larger, so the map stops at
`MAX_ENTRIES` and says how many it left out. Version-control data, virtualenvs and caches
are not the project's code and are skipped; symbolic links are listed by name, never followed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

MAX_ENTRIES: Final = 200
#: Directories that are never the project's code (git data, environments, caches, runtime data).
SKIPPED_DIRS: Final = frozenset(
    {
        ".git",
        ".venv",
        "venv",
        "env",
        "node_modules",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".tox",
        "data",
    }
)


def repository_map(root: Path, max_entries: int = MAX_ENTRIES) -> str:
    """One `path (N bytes)` line per file under `root`, directory by directory in name order,
    at most `max_entries` lines."""
    lines: list[str] = []
    left_out = 0
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(name for name in dirs if name not in SKIPPED_DIRS)
        for name in sorted(names):
            if name.endswith(".pyc"):
                continue
            if len(lines) >= max_entries:
                left_out += 1
                continue
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                lines.append(f"{relative} (symbolic link)")
            else:
                lines.append(f"{relative} ({path.lstat().st_size} bytes)")
    if left_out:
        lines.append(f"... and {left_out} more files (use list_files)")
    return "\n".join(lines) if lines else "(the workspace is empty)"
