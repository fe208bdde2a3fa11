"""Bare git repositories served by `git daemon`: the embedded git host.

Clones and fetches go over the same git protocol a remote host speaks, so the engineer and
deployer run their real clone code against it. The daemon is read-only: anyone on the machine
can reach its port, so it never runs `receive-pack`, and a repository's own configuration
cannot turn pushes back on. The steps that write push to the bare repository's file path
instead, which the base directory's mode (0700) reserves to the stack's user.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from infra.stack.ports import free_port, tcp_accepts
from infra.stack.process import ManagedProcess


class GitDaemon(ManagedProcess):
    """`git daemon` exporting every repository under `base_dir` for reading only."""

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

    def _prepare(self) -> None:
        self.data_dir.chmod(0o700)

    def _command(self) -> list[str]:
        return daemon_command(self.data_dir, "127.0.0.1", self.port)

    def _is_ready(self) -> bool:
        return tcp_accepts(self.port)


def daemon_command(base_dir: Path, listen: str, port: int) -> list[str]:
    """The read-only `git-daemon` argv exporting every repository under `base_dir`."""
    return [
        _git_daemon_binary(),
        "--reuseaddr",
        f"--base-path={base_dir}",
        "--export-all",
        # Off by default; forbidding the override keeps `daemon.receivepack` from enabling it.
        "--forbid-override=receive-pack",
        "--informative-errors",
        f"--listen={listen}",
        f"--port={port}",
        str(base_dir),
    ]


def push_by_path(base_dir: Path, daemon_url: str) -> dict[str, str]:
    """Git configuration that sends pushes to `<daemon_url>/<name>.git` to `<base_dir>/<name>.git`.

    Fetches and clones still go through the daemon; only a process that knows the base
    directory and may write it (the stack's user) can push.
    """
    return {f"url.{base_dir.resolve()}/.pushInsteadOf": f"{daemon_url.rstrip('/')}/"}


def config_environment(config: Mapping[str, str]) -> dict[str, str]:
    """`config` as `GIT_CONFIG_COUNT`/`KEY_n`/`VALUE_n` variables for one git child."""
    env = {"GIT_CONFIG_COUNT": str(len(config))}
    for index, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def local_forge_push_environment(
    state_dir: Path, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`GIT_CONFIG_*` variables that make a git child push to the embedded forge by path.

    For a process of the local stack that has a git environment of its own (the engineer's
    workspaces): the forge's directory and URL come from `ORCH_REPO_LOCAL_BASE` and
    `ORCH_REPO_DAEMON_URL`, which the launcher sets for every process, with the repo step's
    defaults (`<state_dir>/git`, `git://127.0.0.1:9418`).
    """
    env = os.environ if environ is None else environ
    base_dir = Path(env.get("ORCH_REPO_LOCAL_BASE") or state_dir / "git")
    daemon_url = env.get("ORCH_REPO_DAEMON_URL") or "git://127.0.0.1:9418"
    return config_environment(push_by_path(base_dir, daemon_url))


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


def main(argv: list[str] | None = None) -> None:
    """`python -m infra.stack.git_daemon BASE_DIR`: the forge of docker-compose, in the foreground.

    The same read-only daemon the embedded stack runs, replacing this process (so Docker's
    signals reach it). The repo and engineer containers push by path into the shared volume.
    """
    parser = argparse.ArgumentParser(prog="python -m infra.stack.git_daemon")
    parser.add_argument("base_dir", type=Path, help="directory of the bare repositories")
    parser.add_argument("--listen", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=9418, help="port to listen on")
    args = parser.parse_args(argv)
    command = daemon_command(args.base_dir, args.listen, args.port)
    os.execv(command[0], command)  # noqa: S606 -- a fixed argv, the reason this module exists


if __name__ == "__main__":
    main()
