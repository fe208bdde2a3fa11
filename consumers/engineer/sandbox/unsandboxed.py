"""The no-sandbox adapter: model-written code runs as the engineer, on the host. Loudly.

It exists for two places only: inside the coding container (the container is the sandbox)
and on a developer machine without bubblewrap. It must be chosen twice
(`ORCH_ENGINEER_SANDBOX=none` and `ORCH_ENGINEER_ALLOW_UNSANDBOXED=true`), and every run
logs a warning, so it never becomes the quiet default of a production engineer. The
environment is still the caller's allowlist, and output and time are still bounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from consumers.engineer.sandbox.bounded_process import run_bounded
from consumers.engineer.sandbox.port import Mount, SandboxLimits, SandboxResult

log = structlog.get_logger(__name__)


class Unsandboxed:
    """`Sandbox` adapter that isolates nothing: no namespaces, no user, no rlimits."""

    name = "unsandboxed"

    async def run(
        self,
        argv: Sequence[str],
        workspace: Path,
        *,
        network: bool,
        limits: SandboxLimits,
        env: Mapping[str, str],
        mounts: Sequence[Mount] = (),
        writable_workspace: bool = True,
    ) -> SandboxResult:
        log.warning(
            "sandbox.disabled",
            detail="model-written code runs as the engineer's user with the host's network "
            "and files; set ORCH_ENGINEER_SANDBOX=bubblewrap outside a coding container",
            command=argv[0] if argv else "",
        )
        return await run_bounded(argv, cwd=workspace, env=env, limits=limits)

    async def prepare_writable(self, path: Path) -> None:
        """Nothing to do: the code runs as the engineer's own user."""

    async def reclaim(self, path: Path) -> None:
        """Nothing to do: the code ran as the engineer's own user."""
