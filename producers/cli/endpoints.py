"""Where the CLI finds the system: the HTTP API, else `ORCH_*` variables, else `stack.json`.

Remote mode (`ORCH_REMOTE__URL` and `ORCH_REMOTE__TOKEN`) sends the project commands to the HTTP
API with a token; every other command, and every command without those two variables, reaches
NATS and PostgreSQL directly. The group is `remote`, not `api`: `ORCH_API__*` configures the API
server itself, and a machine that runs the server and a remote CLI keeps the two apart.

Only the standard library and the `stack.json` reader: every command resolves its endpoints
first, and `NoStack` is reported without loading a client library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class RemoteApi:
    """The HTTP API a remote CLI talks to, and the bearer token it shows (`orchestrator tokens`)."""

    url: str
    token: str = field(repr=False)


def remote_api() -> RemoteApi | None:
    """Remote mode, when both variables are set (an empty one counts as unset)."""
    url = os.environ.get("ORCH_REMOTE__URL", "").strip()
    token = os.environ.get("ORCH_REMOTE__TOKEN", "").strip()
    if not url or not token:
        return None
    return RemoteApi(url=url.rstrip("/"), token=token)


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
    if info is None and remote_api() is not None:
        raise NoStack(
            "this command needs direct access to NATS and PostgreSQL (ORCH_NATS__URL and "
            "ORCH_DATABASE__URL, or a local stack); ORCH_REMOTE__URL serves only request, "
            "adopt, status, projects, answer, change, archive, redeploy, restart, rollback, "
            "retry and secrets list|set"
        )
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
