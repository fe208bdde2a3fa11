"""`orchestrator up` as a user runs it: up, request, status, lag, events, Ctrl-C, nothing left."""

from __future__ import annotations

import re
import subprocess
import time

import httpx

from .conftest import LocalStackProcess, _cmdline, _cwd, new_state_dir, processes_mentioning
from .test_pipeline_offline import own_port_range


def test_up_request_status_and_clean_shutdown() -> None:
    stack = LocalStackProcess(new_state_dir("up"), env={"ORCH_LLM__PROVIDER": "offline"})
    try:
        info = stack.start()
        own_port_range(stack)
        printed = "".join(stack.output)
        for part in ("nats", "postgres", "openbao", "sshd", "git daemon", "coordinator"):
            assert part in printed, printed
        assert len(processes_mentioning(str(stack.state_dir))) >= 8  # servers and consumers

        again = stack.cli("up", timeout=60)
        assert again.returncode == 1
        assert "already running" in again.stdout

        requested = stack.cli("request", "an HTTP service that tracks my expenses")
        assert requested.returncode == 0, requested.stderr
        project = re.search(r"project ([0-9a-f-]{36})", requested.stdout)
        flow = re.search(r"flow\s+([0-9a-f-]{36})", requested.stdout)
        assert project and flow, requested.stdout

        status = stack.wait_for_state(project.group(1), {"active", "failed"}, timeout=300)
        assert status["state"] == "active", status
        assert status["flow_id"] == flow.group(1)
        human = stack.cli("status", project.group(1)[:8])
        assert human.returncode == 0, human.stderr
        lines = human.stdout.splitlines()
        assert any(line.startswith("state    active") for line in lines), human.stdout
        timeline = [line for line in lines if line.startswith("  ")]
        order = [
            "intents.project.requested",
            "project.spec.ready",
            "project.repo.created",
            "deploy.succeeded",
        ]
        positions = [next(i for i, t in enumerate(timeline) if kind in t) for kind in order]
        assert positions == sorted(positions), human.stdout
        assert all(re.match(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \S+", t) for t in timeline)

        # The lag exporter runs beside the consumers and reads every durable of the topology.
        exporter = httpx.get(
            f"http://127.0.0.1:{info.metrics_ports['lag_exporter']}/metrics", timeout=5
        ).text
        assert (
            'orchestrator_jetstream_consumer_present{consumer="deployer",stream="DEPLOY"} 1.0'
            in (exporter)
        ), exporter
        assert "orchestrator_nats_up{" in exporter and "orchestrator_jetstream_up 1.0" in exporter

        lag = stack.cli("lag")
        assert lag.returncode == 0, lag.stderr
        assert "coordinator-intents" in lag.stdout and "deployer" in lag.stdout

        # The indexer runs like every consumer: its durables are in the lag table and the
        # exporter, and it indexed the released commit into local mode under the state dir.
        assert "indexer-project" in lag.stdout and "indexer-deploys" in lag.stdout, lag.stdout
        assert 'consumer="indexer-deploys",stream="DEPLOY"} 1.0' in exporter, exporter
        indexer_log = stack.state_dir / "logs" / "indexer.log"
        deadline = time.monotonic() + 60
        while "indexer.release_indexed" not in indexer_log.read_text(errors="replace"):
            assert time.monotonic() < deadline, indexer_log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        assert (stack.state_dir / "memory").is_dir()

        stored = stack.cli("events", "tail", "--all", "--no-follow", timeout=60)
        assert stored.returncode == 0, stored.stderr
        assert "intents.project.requested" in stored.stdout
        assert "deploy.succeeded" in stored.stdout

        stored_key = stack.cli("secrets", "set-platform", "llm", "api_key", stdin="sk-e2e-9f3a7c")
        assert stored_key.returncode == 0, stored_key.stdout + stored_key.stderr
        project_secret = stack.cli(
            "secrets", "set", project.group(1), "PAYMENT_TOKEN", stdin="pay-e2e-77b1d2\n"
        )
        assert project_secret.returncode == 0, project_secret.stdout + project_secret.stderr
        assert "PAYMENT_TOKEN" in project_secret.stdout
        refused = stack.cli("secrets", "set-platform", "llm", "token", stdin="x")
        assert refused.returncode == 2 and "api_key" in refused.stdout
        events = stack.cli("events", "tail", "--all", "--no-follow", timeout=60).stdout
        assert "project.secret.stored" in events
        for log in (stack.state_dir / "logs").iterdir():
            text = log.read_text(errors="replace")
            assert "sk-e2e-9f3a7c" not in text and "pay-e2e-77b1d2" not in text, log

        empty = stack.cli("dlq", "list")
        assert empty.returncode == 0 and "empty" in empty.stdout, empty.stdout
        code = stack.interrupt()
        assert code == 0
        deadline = time.monotonic() + 10
        while stack.stack_leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = {pid: (_cmdline(pid), _cwd(pid)) for pid in stack.stack_leftovers()}
        assert leftovers == {}
        assert info.pid not in processes_mentioning(str(stack.state_dir))
        assert not (stack.state_dir / "stack.json").exists()
    finally:
        stack.stop()


def test_cli_without_a_stack_says_how_to_start_one() -> None:
    state_dir = new_state_dir("none")
    state_dir.rmdir()  # a state dir no stack ever used
    stack = LocalStackProcess(state_dir)
    result = stack.cli("status", "whatever")
    assert result.returncode == 1
    assert "orchestrator up" in result.stderr
    assert isinstance(result, subprocess.CompletedProcess)
