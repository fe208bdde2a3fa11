"""The shipped Prometheus config and alert rules are valid, and the alerts fire when they should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "infra" / "prometheus"


def promtool(*args: str, cwd: Path) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus"
    result = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_config_and_rules_are_valid(tmp_path: Path) -> None:
    shutil.copytree(PROMETHEUS_DIR, tmp_path / "prometheus")
    out = promtool("check", "config", "prometheus.yml", cwd=tmp_path / "prometheus")
    assert "SUCCESS" in out


def test_alert_rules_fire_as_specified() -> None:
    out = promtool("test", "rules", "rules_test.yml", cwd=Path(__file__).parent)
    assert "SUCCESS" in out
