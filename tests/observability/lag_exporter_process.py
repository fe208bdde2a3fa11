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
from collections.abc import Iterator
from pathlib import Path

import httpx

from infra.bus.credentials import store_credentials
from infra.bus.permissions import LAG_EXPORTER
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.vault import VaultClient

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def lag_exporter(
    nats: NatsServer, openbao: BootstrappedOpenBao, password: str, workdir: Path
) -> Iterator[str]:
    """Run the exporter until the block ends; yields its `host:port` once it exports lag."""
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
            if "orchestrator_jetstream_consumer_pending{" in text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the lag exporter never exported lag:\n{log.read_text()}")
