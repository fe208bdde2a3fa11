"""A real Prometheus (the Debian `prometheus` binary) on a random port, scraping given targets."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra.stack.ports import free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "infra" / "prometheus" / "rules.yml"


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    assert found, "the prometheus binary is missing: apt-get install prometheus"
    return found


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Any]:
    """Start Prometheus scraping `targets` (host:port -> process label) every second.

    `rules` replaces the shipped rule file; `alertmanager` (host:port) gets the firing alerts.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        targets: dict[str, str], *, rules: Path = RULES, alertmanager: str | None = None
    ) -> Prometheus:
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "orchestrator",
                    "static_configs": [
                        {"targets": [target], "labels": {"process": process}}
                        for target, process in targets.items()
                    ],
                }
            ],
        }
        if alertmanager is not None:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return Prometheus(url)
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready:\n" + json.dumps(config))

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
