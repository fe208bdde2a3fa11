"""Bare git repositories served by `git daemon`: the embedded git host.

Pushes go over the same git protocol a remote host speaks, so the repo and engineer consumers
run their real clone/commit/push code against it. Access is anonymous and loopback-only.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from infra.stack.ports import free_port, tcp_accepts
from infra.stack.process import ManagedProcess


class GitDaemon(ManagedProcess):
    """`git daemon` exporting every repository under `base_dir`, pushes enabled."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        super().__init__("git-daemon", base_dir)
        self.port = port or free_port()

    @property
    def base_url(self) -> str:
        """`git://127.0.0.1:<port>/`, the prefix of every repository URL."""
        return f"git://127.0.0.1:{self.port}/"

    def url_for(self, repo_name: str) -> str:
        """Clone and push URL of the bare repository `<repo_name>.git`."""
        return f"{self.base_url}{repo_name}.git"

    def path_for(self, repo_name: str) -> Path:
        """Where the bare repository `<repo_name>.git` lives on disk."""
        return self.data_dir / f"{repo_name}.git"

    def _command(self) -> list[str]:
        return [
            _git_daemon_binary(),
            "--reuseaddr",
            f"--base-path={self.data_dir}",
            "--export-all",
            "--enable=receive-pack",
            "--informative-errors",
            "--listen=127.0.0.1",
            f"--port={self.port}",
            str(self.data_dir),
        ]

    def _is_ready(self) -> bool:
        return tcp_accepts(self.port)


@functools.cache
def _git_daemon_binary() -> str:
    """`git-daemon` itself: `git daemon` would run it as a grandchild out of PDEATHSIG's reach."""
    exec_path = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    binary = Path(exec_path) / "git-daemon"
    if not binary.is_file():
        raise FileNotFoundError(
            f"git-daemon not found in {exec_path}; install it with `apt-get install git`"
        )
    return str(binary)
