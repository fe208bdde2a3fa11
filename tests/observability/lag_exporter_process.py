"""The real lag exporter process (`python -m infra.lag_exporter`) against an authenticated NATS.

Shared by the lag and alerting tests: the exporter logs in to OpenBao with its own AppRole,
reads its NATS password there and connects as the `lag_exporter` user, as in a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats

from contracts import events as ev
from infra.bus.credentials import NatsCredentials, store_credentials
from infra.bus.permissions import ADMIN, LAG_EXPORTER, render_authorization
from infra.bus.topology import apply_topology
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.vault import VaultClient

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def authenticated_nats(directory: Path, passwords: dict[str, str]) -> Iterator[NatsServer]:
    """A nats-server that requires a user (every platform user, as generated), topology applied."""
    with NatsServer(directory, authorization=render_authorization(passwords)) as server:
        admin = NatsCredentials(ADMIN, passwords[ADMIN])
        asyncio.run(apply_topology(server.url, connect_options=admin.connect_options()))
        yield server


@contextlib.contextmanager
def lag_exporter(
    nats: NatsServer, openbao: BootstrappedOpenBao, password: str, workdir: Path
) -> Iterator[str]:
    """Run the exporter until the block ends; yields its `host:port` once ready and exporting."""
    asyncio.run(
        store_credentials(
            VaultClient(openbao.addr, token=openbao.root_token), {LAG_EXPORTER: password}
        )
    )
    secret_id_file = workdir / "lag_exporter.secret_id"
    secret_id_file.write_text(openbao.credentials[LAG_EXPORTER].secret_id + "\n")
    secret_id_file.chmod(0o600)
    port = free_port()
    log_path = workdir / "lag_exporter.log"
    env = {
        **os.environ,
        "ORCH_NATS__URL": nats.url,
        "ORCH_VAULT__ADDR": openbao.addr,
        "ORCH_VAULT__ROLE_ID": openbao.credentials[LAG_EXPORTER].role_id,
        "ORCH_VAULT__SECRET_ID_FILE": str(secret_id_file),
        "ORCH_METRICS__HOST": "127.0.0.1",
        "ORCH_METRICS__PORT": str(port),
        "ORCH_LAG_EXPORTER__MONITOR_URLS": nats.monitor_url,
        "ORCH_LAG_EXPORTER__INTERVAL_SECONDS": "0.5",
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.lag_exporter"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_lag(proc, port, log_path)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_lag(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the lag exporter exited:\n{log.read_text()}"
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            if ready and "orchestrator_jetstream_consumer_pending{" in text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the lag exporter never exported lag:\n{log.read_text()}")


async def publish_backlog(server: NatsServer, passwords: dict[str, str], count: int) -> None:
    """`count` code requests for the engineer, whose process does not run in these tests."""
    admin = NatsCredentials(ADMIN, passwords[ADMIN])
    nc = await nats.connect(server.url, **admin.connect_options())
    try:
        js = nc.jetstream()
        for _ in range(count):
            await js.publish(
                ev.CodeRequested.TYPE, b"{}", headers={"Nats-Msg-Id": str(uuid.uuid4())}
            )
    finally:
        await nc.close()
