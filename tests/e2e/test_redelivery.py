"""A step's process killed in the middle of its work: the redelivery converges, nothing doubles.

For each side-effecting step (provision, repo, engineer, deploy) the test waits until the step
is visibly at work, freezes the step's process group (SIGSTOP) to prove the message is still
unacknowledged, and kills it (SIGKILL), as an out-of-memory kill or a lost node would. The
stack's supervisor starts the process again; JetStream redelivers the message once its ack
wait passes. The project must still go live with exactly one of everything: one repository
with one scaffold commit, one port allocation, one release directory, one running service.

The stack here runs with a 1 s heartbeat and the four durables' ack wait cut to a few seconds
(an operator's `jsm` edit, the same call each process makes at its start, so it is made again
after every restart), so a redelivery comes in seconds instead of the production minutes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import psycopg
import pytest

from contracts.topology import DEPLOYER, ENGINEER, PROVISIONER, REPO, ConsumerSpec
from infra.bus.topology import apply_consumers

from .conftest import ROOT, LocalStackProcess, admin_nats, new_state_dir
from .test_pipeline_offline import (
    get_json,
    own_port_range,
    sql,
    unique_name,
    wait_for_project,
)

ACK_WAIT_SECONDS = 4.0
STEPS = {spec.process: spec for spec in (PROVISIONER, REPO, ENGINEER, DEPLOYER)}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStackProcess]:
    local = LocalStackProcess(
        new_state_dir("redelivery"),
        env={"ORCH_LLM__PROVIDER": "offline", "ORCH_CONSUMER__HEARTBEAT_SECONDS": "1"},
    )
    local.start()
    own_port_range(local)
    for name in STEPS:
        wait_until(partial(started_once, local, name), f"{name} started", timeout=60,
                   interval=0.2)
        shorten_ack_wait(local, name)
    yield local
    local.stop()


def starts(stack: LocalStackProcess, name: str) -> int:
    """How often the process has started; each start re-applies its durables' settings."""
    log = stack.state_dir / "logs" / f"{name}.log"
    return log.read_text(errors="replace").count('"consumer.started"') if log.exists() else 0


def started_once(stack: LocalStackProcess, name: str) -> bool:
    return starts(stack, name) >= 1


def shorten_ack_wait(stack: LocalStackProcess, name: str) -> None:
    assert stack.info is not None
    info = stack.info
    quick = dataclasses.replace(STEPS[name], ack_wait_seconds=ACK_WAIT_SECONDS)

    async def apply() -> None:
        client = await admin_nats(info)
        try:
            await apply_consumers(client.jsm(), (quick,))  # keeps where the durable started
        finally:
            await client.close()

    asyncio.run(apply())


# ---------------------------------------------------------------- processes


def consumer_pid(stack: LocalStackProcess, name: str, timeout: float = 30,
                 other_than: int | None = None) -> int:
    """The pid of consumer `name` of this stack (not its git or pytest children).

    The stack forks its consumers from a preloading zygote (`infra/stack/zygote.py`): such a
    child keeps the zygote's command line and environment block, and its `comm` is its name.
    One started directly is `python -m consumers.<name>`.
    """
    marker = f"ORCH_STATE_DIR={stack.state_dir}".encode()
    module = f"consumers.{name}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == other_than:
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                environ = (proc / "environ").read_bytes().split(b"\0")
                comm = (proc / "comm").read_text().strip()
            except OSError:
                continue
            forked = argv[1:3] == [b"-m", b"infra.stack.zygote"] and comm == name[:15]
            if (forked or argv[1:3] == [b"-m", module]) and marker in environ:
                return int(proc.name)
        time.sleep(0.1)
    raise AssertionError(f"no running {name} process of the stack after {timeout}s")


def has_children(pid: int) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            return True
    return False


def ack_pending(stack: LocalStackProcess, spec: ConsumerSpec) -> int:
    assert stack.info is not None
    stack_info = stack.info

    async def query() -> int:
        client = await admin_nats(stack_info)
        try:
            info = await client.jsm().consumer_info(spec.stream.name, spec.durable)
            return info.num_ack_pending or 0
        finally:
            await client.close()

    return asyncio.run(query())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120,
               interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not seen within {timeout}s")


def kill_mid_step(stack: LocalStackProcess, name: str, pid: int) -> None:
    """Freeze the step's process group, prove its message is unacknowledged, kill it.

    The supervisor starts the process again, and the new process re-applies its durable's
    production ack wait; the short one is put back so the redelivery comes in seconds.
    """
    started = starts(stack, name)
    os.killpg(pid, signal.SIGSTOP)
    try:
        pending = ack_pending(stack, STEPS[name])
        assert pending >= 1, f"{name} had already acknowledged its message: not a mid-step kill"
    finally:
        os.killpg(pid, signal.SIGKILL)
    consumer_pid(stack, name, other_than=pid)
    wait_until(lambda: starts(stack, name) > started, f"{name} restarted", timeout=60,
               interval=0.1)
    shorten_ack_wait(stack, name)


# ---------------------------------------------------------------- what must exist once


def scaffold_commits(stack: LocalStackProcess, slug: str) -> list[str]:
    assert stack.info is not None
    bare = Path(stack.info.git_base_dir) / f"{slug}.git"
    log = subprocess.run(
        ["git", "log", "--all", "--format=%H %(trailers:key=Project-Id,valueonly)"],
        cwd=bare, capture_output=True, text=True, check=True,
    )
    return [line for line in log.stdout.splitlines() if line.strip()]


def assert_live_with_one_of_everything(stack: LocalStackProcess, project_id: str, slug: str
                                       ) -> None:
    status = wait_for_project(stack, project_id, timeout=400)
    assert status["state"] == "active", status
    assert status["error"] is None, status
    ((commit, port),) = sql(stack, "SELECT code_commit, port FROM projects WHERE id = %s",
                            project_id)
    assert get_json(f"{status['url']}/health")["version"] == commit

    commits = scaffold_commits(stack, slug)
    assert len(commits) == 1 and commits[0].split()[1:] == [project_id], commits
    assert sql(stack, "SELECT port FROM port_allocations WHERE project_id = %s",
               project_id) == [(port,)]
    releases = sorted(p.name for p in (stack.state_dir / "deployments" / slug / "releases")
                      .iterdir())
    assert releases == [commit[:12]], releases
    assert sql(stack, "SELECT commit, status FROM deployments WHERE project_id = %s",
               project_id) == [(commit, "succeeded")]
    supervisors = [
        pid for pid in _pids_with_cmdline(f"deployments/{slug}/") if _is_supervisor(pid)
    ]
    assert len(supervisors) == 1, f"{len(supervisors)} supervisors run {slug}"
    types = [entry["type"] for entry in status["timeline"]]
    for kind in ("project.resources.allocated", "project.repo.created",
                 "project.code.generated", "deploy.succeeded"):
        assert types.count(kind) == 1, types


def _pids_with_cmdline(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _is_supervisor(pid: int) -> bool:
    try:
        return b"supervise.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Submission:
    """`orchestrator request` running in the background, so a fast step can be watched from
    the moment the request leaves (the CLI takes longer to exit than the repo step to run)."""

    def __init__(self, stack: LocalStackProcess, step: str) -> None:
        self.slug = unique_name(f"kill-{step}")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "--state-dir", str(stack.state_dir),
             "request", f"An HTTP API that keeps my notes over REST, called {self.slug}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def check(self) -> bool:
        """False while the request is on its way; raises with its error if it failed."""
        if self._process.poll() not in (None, 0):
            raise AssertionError(f"the request failed: {self._process.communicate()[1]}")
        return False

    def project_id(self) -> str:
        out, err = self._process.communicate(timeout=120)
        assert self._process.returncode == 0, err
        found = re.search(r"project ([0-9a-f-]{36})", out)
        assert found, out
        return found.group(1)


# ---------------------------------------------------------------- the four steps


def test_provisioner_killed_mid_allocation(stack: LocalStackProcess) -> None:
    assert stack.info is not None
    pid = consumer_pid(stack, "provisioner")
    url = stack.info.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    # Holding the server row makes the allocation wait inside its transaction: the step has
    # started and cannot finish until the test lets go.
    with psycopg.connect(url) as holder:
        holder.execute("SELECT id FROM servers WHERE name = 'local' FOR UPDATE")
        submission = Submission(stack, "provision")
        wait_until(
            lambda: submission.check() or bool(sql(
                stack, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND query ILIKE '%%FROM servers%%FOR UPDATE%%'")),
            "the provisioner waiting for the server row", interval=0.1,
        )
        kill_mid_step(stack, "provisioner", pid)
        holder.rollback()
    assert_live_with_one_of_everything(stack, submission.project_id(), submission.slug)


def test_repo_killed_while_creating_the_repository(stack: LocalStackProcess) -> None:
    assert stack.info is not None
    pid = consumer_pid(stack, "repo")
    submission = Submission(stack, "repo")
    head = Path(stack.info.git_base_dir) / f"{submission.slug}.git" / "HEAD"
    wait_until(lambda: submission.check() or head.exists(), f"{head} being created",
               interval=0.002)
    kill_mid_step(stack, "repo", pid)
    assert_live_with_one_of_everything(stack, submission.project_id(), submission.slug)


def test_engineer_killed_while_verifying_the_code(stack: LocalStackProcess) -> None:
    pid = consumer_pid(stack, "engineer")
    submission = Submission(stack, "engineer")
    project_id = submission.project_id()
    log = stack.state_dir / "logs" / "engineer.log"
    wait_until(lambda: any('"engineer.started"' in line and project_id in line
                           for line in log.read_text(errors="replace").splitlines()),
               "the engineer starting on the project", interval=0.05)
    wait_until(lambda: has_children(pid), "the engineer installing or running the tests",
               interval=0.02)
    kill_mid_step(stack, "engineer", pid)
    assert_live_with_one_of_everything(stack, project_id, submission.slug)


def test_deployer_killed_while_deploying(stack: LocalStackProcess) -> None:
    pid = consumer_pid(stack, "deployer")
    submission = Submission(stack, "deploy")
    releases = stack.state_dir / "deployments" / submission.slug / "releases"
    wait_until(lambda: releases.is_dir() and any(releases.iterdir()),
               f"a release directory under {releases}", timeout=300, interval=0.05)
    kill_mid_step(stack, "deployer", pid)
    assert_live_with_one_of_everything(stack, submission.project_id(), submission.slug)
