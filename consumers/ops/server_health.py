"""On each `server-health` tick: is every monitored server reachable, with disk and memory left?

For each server in `infra.server_lifecycle.MONITORED` (ready, unreachable, draining) it runs one
SSH command (pinned host key, key from Vault at `servers/<name>`) that reports free disk and
available memory, and compares them with `ServerHealthThresholds`. Each check has its own
incident, keyed `server:<name>:<check>` (unique among open incidents, so a redelivered tick or
a second replica never opens it twice); every admin with a chat is told when one opens or is
resolved. A failing check moves a `ready` server to `unreachable` (placement skips it); all
checks passing move an `unreachable` one back to `ready`. A draining server keeps its state:
its incidents still open and resolve. This consumer owns those moves (see
`infra.server_lifecycle`), because it is where health is measured.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import events as ev
from contracts.envelope import Event
from infra.db.enums import ServerState
from infra.db.models import Server
from infra.incidents import (
    admin_chats,
    open_incident,
    open_incidents,
    resolve_incident,
    tell_admins,
)
from infra.inventory import PRIVATE_KEY_FIELD
from infra.playbook_runner import write_private_key
from infra.server_lifecycle import MONITORED, transition
from infra.vault import server_secret_path

ACTOR = "ops"
#: The keys of the server checks' incidents: `server:<name>:<check>`.
SERVER_KEY_PREFIX = "server:"
CHECKS = ("reachability", "disk", "memory")
#: Prints free kilobytes of the root file system, then MemAvailable in kilobytes.
MEASURE_COMMAND = (
    "df -Pk / | awk 'NR==2 {print $4}' && awk '/^MemAvailable:/ {print $2}' /proc/meminfo"
)


@dataclass(frozen=True)
class ServerHealthThresholds:
    """Below these a server is unfit for new projects (ORCH_OPS__* in `OpsSettings`)."""

    min_free_disk_mb: int = 1024
    min_free_memory_mb: int = 128
    ssh_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class Measurement:
    free_disk_mb: int
    free_memory_mb: int


class ServerUnreachable(Exception):
    """SSH did not get in or the command did not answer; the message says what was seen."""


class ServerProbe(Protocol):
    async def measure(
        self, server: Server, private_key: str, timeout_seconds: float
    ) -> Measurement: ...


class ServerKeys(Protocol):
    async def read_secret(self, path: str) -> Mapping[str, str]: ...


class SshServerProbe:
    """One `ssh` run per server: strict, pinned host key, key only, no agent, bounded time."""

    async def measure(
        self, server: Server, private_key: str, timeout_seconds: float
    ) -> Measurement:
        directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="server-health-"))
        try:
            key = directory / "key"
            write_private_key(key, private_key)
            known_hosts = directory / "known_hosts"
            known_hosts.write_text(server.host_key.strip() + "\n")
            process = await asyncio.create_subprocess_exec(
                "ssh", "-F", "/dev/null", "-i", str(key), "-p", str(server.ssh_port),
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(timeout_seconds))}",
                f"{server.ssh_user}@{server.host}", MEASURE_COMMAND,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                async with asyncio.timeout(timeout_seconds + 5):
                    stdout, stderr = await process.communicate()
            except TimeoutError:
                process.kill()
                await process.wait()
                raise ServerUnreachable(f"no answer over SSH in {timeout_seconds:g}s") from None
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            raise ServerUnreachable(lines[-1] if lines else f"ssh exited {process.returncode}")
        try:
            disk_kb, memory_kb = (int(line) for line in stdout.decode().split())
        except ValueError:
            raise ServerUnreachable(
                "the server's df or /proc/meminfo answer was unreadable"
            ) from None
        return Measurement(free_disk_mb=disk_kb // 1024, free_memory_mb=memory_kb // 1024)


class ServerHealthService:
    def __init__(
        self,
        session: AsyncSession,
        probe: ServerProbe,
        keys: ServerKeys,
        thresholds: ServerHealthThresholds,
    ) -> None:
        self.session = session
        self.probe = probe
        self.keys = keys
        self.thresholds = thresholds

    async def check_servers(self, tick: ev.SchedulerTick) -> list[Event]:
        servers = (
            await self.session.scalars(
                select(Server).where(Server.state.in_(MONITORED)).order_by(Server.name)
            )
        ).all()
        failures = await asyncio.gather(*(self._failures(server) for server in servers))
        opened_before = await open_incidents(self.session, SERVER_KEY_PREFIX)
        admins = await admin_chats(self.session)
        emitted: list[Event] = []
        for server, failed in zip(servers, failures, strict=True):
            for check in CHECKS:
                incident = opened_before.get(f"{SERVER_KEY_PREFIX}{server.name}:{check}")
                if check in failed and incident is None:
                    emitted.extend(
                        await self._open(tick, server, check, failed[check], admins, len(emitted))
                    )
                elif check not in failed and incident is not None:
                    emitted.append(
                        resolve_incident(incident, tick, actor=ACTOR, index=len(emitted))
                    )
                    emitted.extend(
                        self._tell(
                            tick,
                            admins,
                            len(emitted),
                            f"Server {server.name}: {check} is fine again.",
                        )
                    )
            await self._move(server, failed)
        return emitted

    async def _failures(self, server: Server) -> dict[str, str]:
        """Failed check → what was seen; empty when the server is healthy."""
        try:
            key = (await self.keys.read_secret(server_secret_path(server.name)))[PRIVATE_KEY_FIELD]
            seen = await self.probe.measure(server, key, self.thresholds.ssh_timeout_seconds)
        except Exception as exc:  # any failure to get an answer is this check's verdict
            return {"reachability": f"{server.host}:{server.ssh_port}: {exc}"}
        failed = {}
        if seen.free_disk_mb < self.thresholds.min_free_disk_mb:
            failed["disk"] = (
                f"{seen.free_disk_mb} MB free on /, below {self.thresholds.min_free_disk_mb} MB"
            )
        if seen.free_memory_mb < self.thresholds.min_free_memory_mb:
            failed["memory"] = (
                f"{seen.free_memory_mb} MB available, below {self.thresholds.min_free_memory_mb} MB"
            )
        return failed

    async def _move(self, server: Server, failed: Mapping[str, str]) -> None:
        state = ServerState(server.state)
        if failed and state is ServerState.READY:
            reason = "; ".join(f"{check}: {seen}" for check, seen in failed.items())
            await transition(self.session, server.name, ServerState.UNREACHABLE, reason[:500])
        elif not failed and state is ServerState.UNREACHABLE:
            await transition(self.session, server.name, ServerState.READY, "health checks pass")

    async def _open(
        self,
        tick: ev.SchedulerTick,
        server: Server,
        check: str,
        seen: str,
        admins: Sequence[tuple[str, int]],
        index: int,
    ) -> list[Event]:
        opened = await open_incident(
            self.session,
            tick,
            actor=ACTOR,
            index=index,
            kind=f"server_{check}",
            key=f"{SERVER_KEY_PREFIX}{server.name}:{check}",
            summary=f"server {server.name} failed its {check} check: {seen}"[:1000],
        )
        if opened is None:  # another replica opened it first
            return []
        return [opened, *self._tell(tick, admins, index + 1, opened.summary + ".")]

    def _tell(
        self, tick: ev.SchedulerTick, admins: Sequence[tuple[str, int]], index: int, text: str
    ) -> list[ev.NotificationRequested]:
        return tell_admins(tick, admins, actor=ACTOR, index=index, text=text)
