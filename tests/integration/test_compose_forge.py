"""The compose forge: `python -m infra.stack.git_daemon` as the `forge` service runs it.

It becomes the embedded stack's read-only git daemon: repositories pushed by path into its
directory are cloned over git://, and a push over git:// is refused.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack.ports import free_port, tcp_accepts

from .conftest import wait_for


def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    base = tmp_path / "repos"
    base.mkdir(mode=0o700)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.stack.git_daemon", str(base),
         "--listen", "127.0.0.1", "--port", str(port)],
    )  # fmt: skip
    try:
        yield base, port
    finally:
        process.terminate()
        process.wait(10)


async def test_forge_serves_what_is_pushed_by_path_and_refuses_pushes_over_git(
    tmp_path: Path, forge: tuple[Path, int]
) -> None:
    base, port = forge
    assert git("init", "--bare", "-b", "main", str(base / "notes.git")).returncode == 0
    work = tmp_path / "work"
    assert git("init", "-b", "main", str(work)).returncode == 0
    (work / "README.md").write_text("notes\n")
    assert git("add", ".", cwd=work).returncode == 0
    assert git("commit", "-m", "first", cwd=work).returncode == 0
    pushed = git("push", str(base / "notes.git"), "main", cwd=work)
    assert pushed.returncode == 0, pushed.stderr
    await wait_for(lambda: tcp_accepts(port))

    url = f"git://127.0.0.1:{port}/notes.git"
    cloned = git("clone", url, str(tmp_path / "clone"))
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "clone" / "README.md").read_text() == "notes\n"

    (work / "README.md").write_text("changed\n")
    assert git("commit", "-am", "second", cwd=work).returncode == 0
    refused = git("push", url, "main", cwd=work)
    assert refused.returncode != 0
    assert "service not enabled" in refused.stderr
