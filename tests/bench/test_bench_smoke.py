"""The benchmark script still runs end to end and prints its table (figures are not checked).

It runs as a subprocess, exactly as `make bench` does, with tiny numbers and without the
`orchestrator up` memory part; timing is never asserted because it belongs to the machine.
A batch size below the backlog makes the runtime go through several batches.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "runtime_throughput.py"


def test_benchmark_prints_its_table() -> None:
    argv = [
        sys.executable, str(SCRIPT),
        "--events", "200", "--rate", "50", "--duration", "1", "--batch-size", "20",
        "--no-stack-memory", "--timeout", "120",
    ]  # fmt: skip
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "runtime batch size 20" in out, out
    header = next(line for line in out.splitlines() if "runtime/baseline" in line)
    assert header.split()[:3] == ["runtime", "baseline", "runtime/baseline"]
    for row in (
        "throughput (events/s)",
        "latency p50 (ms)",
        "latency p99 (ms)",
        "CPU per event (ms, bench process)",
        "transactions per event",
        "WAL syncs per event",
    ):
        assert row in out, out
    # 200 backlog events plus 50 paced ones per contender, none lost and none unpublished.
    assert "inbox rows runtime 250" in out, out
    assert "inbox rows baseline 250" in out, out
    assert "outbox rows unpublished 0" in out, out
    assert "derived events in NOTIFY 500" in out, out


def test_batch_size_below_one_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--batch-size", "0", "--no-stack-memory"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "--batch-size must be at least 1" in result.stderr
