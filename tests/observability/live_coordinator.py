"""The real coordinator process, with the metric collectors, for the dashboard test.

Run as a script (`python tests/observability/live_coordinator.py`) with the usual `ORCH_*`
environment. It is `consumers.coordinator` built by its own composition root on the real
runtime; on top it starts what an operator's deployment runs beside it:
- the JetStream lag collector over the coordinator's durables and the project-state collector;
- a Vault read of `LIVE_VAULT_PATH` (which registers the value for log masking, as every
  process's Vault client does) followed by log lines that contain the value, the way a
  library error would, so the test can check that the process's real stderr never shows it;
- the metrics of stages that do not run in this test (LLM usage of the analyst and engineer,
  finished deploys), recorded through the same functions those stages call.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import structlog

from consumers.coordinator.app import build_app
from infra.metrics import (
    DEPLOYS,
    OUTBOX_PENDING,
    ConsumerLagCollector,
    PeriodicCollector,
    ProjectStateCollector,
    record_llm_usage,
)
from infra.vault import VaultClient

COLLECT_INTERVAL = 1.0


async def _leak_attempts() -> None:
    """Read a secret as a process does, then let it reach the logs in the usual careless ways."""
    client = VaultClient(os.environ["LIVE_VAULT_ADDR"], token=os.environ["LIVE_VAULT_TOKEN"])
    secret = await client.read_secret(os.environ["LIVE_VAULT_PATH"])
    value = secret["value"]
    log = structlog.stdlib.get_logger("live.leaks")
    log.info("connecting", dsn=f"postgresql://app:{value}@db/app")
    logging.getLogger("some.library").warning("auth failed for key %s", value)
    try:
        raise PermissionError(f"token {value} rejected by upstream")
    except PermissionError:
        log.exception("upstream call failed")


def _stand_in_for_stages_not_running() -> None:
    """Series other processes own; recorded here so every dashboard panel has data."""
    record_llm_usage(
        project="live-project",
        stage="analyst",
        prompt_tokens=1200,
        completion_tokens=300,
        cost_usd=0.0042,
    )
    record_llm_usage(
        project="live-project",
        stage="engineer",
        prompt_tokens=5400,
        completion_tokens=2100,
        cost_usd=0.031,
    )
    DEPLOYS.labels("succeeded").inc()
    DEPLOYS.labels("failed").inc()
    OUTBOX_PENDING.labels("coordinator").set(0)


def main() -> None:
    app = build_app()
    collectors: list[PeriodicCollector] = []

    async def start_collectors() -> None:
        assert app.nc is not None
        assert app.sessionmaker is not None
        collectors.append(
            ConsumerLagCollector(app.nc.jsm(), app.specs, interval=COLLECT_INTERVAL)
        )
        collectors.append(ProjectStateCollector(app.sessionmaker, interval=COLLECT_INTERVAL))
        for collector in collectors:
            collector.start()
        _stand_in_for_stages_not_running()
        await _leak_attempts()

    async def stop_collectors() -> None:
        for collector in collectors:
            await collector.stop()

    app.on_startup.append(start_collectors)
    app.on_shutdown.append(stop_collectors)
    app.run()


if __name__ == "__main__":
    main()
