"""`python -m producers.api` as an operator runs it: env in, JSON logs out, SIGTERM stops it."""

from __future__ import annotations

import asyncio
import json
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
from producers.api.tokens import issue_token

ROOT = Path(__file__).resolve().parents[2]


async def test_the_process_serves_with_its_approle_and_stops_on_sigterm(
    bus_url: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    openbao: BootstrappedOpenBao,
    tmp_path: Path,
) -> None:
    issued = await issue_token(sessionmaker, "ops", "olivia")
    port = free_port()
    credentials = openbao.credentials["api"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "VAULT_"))},
        "ORCH_NATS__URL": bus_url,
        "ORCH_DATABASE__URL": database_url,
        "ORCH_VAULT__ADDR": openbao.addr,
        "ORCH_VAULT__ROLE_ID": credentials.role_id,
        "ORCH_VAULT__SECRET_ID": credentials.secret_id,
        "ORCH_API__PORT": str(port),
    }
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "producers.api"], cwd=ROOT, env=env, stderr=log, stdout=log
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            # Imports alone take ~3 s of CPU; on two cores shared by a whole test run the wall
            # time can be many times that, and the loop below ends as soon as it answers.
            deadline = time.monotonic() + 90
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.1)
            listed = await http.get(
                "/projects", headers={"Authorization": f"Bearer {issued.token}"}
            )
            assert listed.status_code == 200
            assert listed.json() == {"projects": []}
            # What its probes ask: live, and ready with every connection it uses.
            assert (await http.get("/livez")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"].keys() == {"event_loop", "nats", "postgres", "vault"}
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
    assert code == 0, log_path.read_text()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(line.get("logger") == "uvicorn.access" for line in lines)
    assert all(line["process"] == "api" for line in lines)
    assert issued.token not in log_path.read_text()
