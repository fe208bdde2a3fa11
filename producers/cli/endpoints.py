"""Where the CLI finds the system: `ORCH_*` variables, else the local stack's `stack.json`.

Only the standard library and the `stack.json` reader: every command resolves its endpoints
first, and `NoStack` is reported without loading a client library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from infra.stack.stack_info import read_stack_info


class NoStack(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoints:
    nats_url: str
    database_url: str
    vault_addr: str
    vault_token: str
    state_dir: Path


def resolve(state_dir: Path) -> Endpoints:
    """Explicit variables win (a remote deployment); otherwise the running local stack."""
    env = os.environ
    if env.get("ORCH_NATS__URL") and env.get("ORCH_DATABASE__URL"):
        return Endpoints(
            nats_url=env["ORCH_NATS__URL"],
            database_url=env["ORCH_DATABASE__URL"],
            vault_addr=env.get("ORCH_VAULT__ADDR", ""),
            vault_token=env.get("ORCH_VAULT__TOKEN", ""),
            state_dir=state_dir,
        )
    info = read_stack_info(state_dir)
    if info is None:
        raise NoStack(
            f"no running stack in {state_dir}: start one with `orchestrator up` "
            "(or set ORCH_NATS__URL and ORCH_DATABASE__URL to reach a deployed one)"
        )
    return Endpoints(
        nats_url=info.nats_url,
        database_url=info.database_url,
        vault_addr=info.vault_addr,
        vault_token=info.vault_token,
        state_dir=state_dir,
    )
