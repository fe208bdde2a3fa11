"""`stack.json`: how other commands find the running local stack, and tell it from a dead one.

`orchestrator up` writes the file once everything is ready and removes it on shutdown; every
other command (the CLI, the demo, tests) only reads it. Reading stays apart from the launcher,
which imports the servers and the bus, so a short-lived command such as `orchestrator status`
does not pay for starting a stack it never starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STACK_FILE = "stack.json"


@dataclass(frozen=True)
class DeployTargetInfo:
    """The local sshd as a deploy target: what a bootstrap step registers as server `local`."""

    host: str
    port: int
    user: str
    known_hosts_line: str
    client_key_path: str


@dataclass(frozen=True)
class StackInfo:
    """Where every part of a running local stack listens, and how a client reaches it."""

    pid: int
    pid_start_ticks: int | None
    state_dir: str
    nats_url: str
    nats_monitor_url: str
    database_url: str
    vault_addr: str
    vault_token: str = field(repr=False)
    git_base_url: str
    git_base_dir: str
    deploy_target: DeployTargetInfo
    metrics_ports: dict[str, int]
    log_dir: str
    env: dict[str, str] = field(repr=False)

    def endpoints(self) -> str:
        """A one-line summary for messages such as "already running"."""
        return (
            f"nats {self.nats_url}, postgres {_without_password(self.database_url)}, "
            f"vault {self.vault_addr}, "
            f"git {self.git_base_url}, ssh {self.deploy_target.user}@{self.deploy_target.host}"
            f":{self.deploy_target.port}"
        )

    def to_json(self) -> dict[str, Any]:
        """The `stack.json` document."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackInfo:
        """Parse a `stack.json` document."""
        return cls(**{**data, "deploy_target": DeployTargetInfo(**data["deploy_target"])})


def read_stack_info(state_dir: Path) -> StackInfo | None:
    """The stack running from `state_dir`, or None if there is none (or it died uncleanly)."""
    try:
        info = StackInfo.from_json(json.loads((state_dir / STACK_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        # Unreadable or from another version; the up.lock still guards against a second stack.
        return None
    if not _same_process_alive(info.pid, info.pid_start_ticks):
        return None
    return info


def _without_password(url: str) -> str:
    """`url` with its password masked, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _same_process_alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or process_start_ticks(pid) == started
