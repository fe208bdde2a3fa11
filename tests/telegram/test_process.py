"""`python -m producers.telegram_bot` as an operator runs it: its /metrics, /livez and /readyz.

The bot polls the fake Bot API; its token, like in production, is read from Vault with its own
AppRole. What is checked is what Prometheus and the orchestrator's probes ask of the process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.vault import VaultClient
from producers.telegram_bot.app import TELEGRAM_VAULT_PATH
from tests.fakes.telegram_api import FakeTelegramAPI

from .conftest import BOT_TOKEN

ROOT = Path(__file__).resolve().parents[2]


async def test_the_bot_process_serves_metrics_liveness_and_readiness(
    bus_url: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    openbao: BootstrappedOpenBao,
    telegram: FakeTelegramAPI,
    tmp_path: Path,
) -> None:
    operator = VaultClient(openbao.addr, token=openbao.root_token)
    await operator.write_secret(TELEGRAM_VAULT_PATH, {"token": BOT_TOKEN})
    port = free_port()
    credentials = openbao.credentials["telegram_bot"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "VAULT_"))},
        "ORCH_NATS__URL": bus_url,
        "ORCH_DATABASE__URL": database_url,
        "ORCH_VAULT__ADDR": openbao.addr,
        "ORCH_VAULT__ROLE_ID": credentials.role_id,
        "ORCH_VAULT__SECRET_ID": credentials.secret_id,
        "ORCH_PROCESS_NAME": "telegram_bot",
        "ORCH_METRICS__PORT": str(port),
        "ORCH_TELEGRAM__API_BASE": telegram.base_url,
        "ORCH_TELEGRAM__POLLING_TIMEOUT": "1",
    }
    log_path = tmp_path / "bot.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "producers.telegram_bot"],
            cwd=ROOT,
            env=env,
            stderr=log,
            stdout=log,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            # Imports take seconds of CPU on a shared machine: wait for readiness, not a time.
            deadline = time.monotonic() + 90
            while True:
                try:
                    ready = await http.get("/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.1)
            assert ready.json()["checks"].keys() == {"event_loop", "nats", "postgres", "vault"}
            assert (await http.get("/livez")).status_code == 200
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            assert "process_cpu_seconds_total" in metrics.text
            # It polls the Bot API meanwhile: the process is the bot, not only its endpoints.
            await telegram.wait_for_call("getUpdates")
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
        await operator.delete_secret(TELEGRAM_VAULT_PATH)
    assert code == 0, log_path.read_text()
