"""When a step cannot succeed, the user is told why and the project ends in the right state.

Each failure is caused the way it happens in real life, through the real stack:
- a new release that does not start: its health check fails, the deployer rolls back, the
  previous release keeps serving and the project stays live with the error recorded;
- code whose tests fail: the engineer gives up (offline mode verifies the scaffold once;
  the repository already holds a failing test the scaffold lands on top of);
- GitHub refusing the platform token (a fake GitHub speaking the real API answers 401);
- no deploy target with room left.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.events import DeployRequested
from contracts.spec import ProjectSpec
from infra.bus.publisher import JetStreamPublisher
from infra.vault import VaultClient
from tests.repo.fake_github import FakeGitHub

from .conftest import LocalStackProcess, admin_nats, new_state_dir
from .test_pipeline_offline import (
    chat_messages,
    get_json,
    own_port_range,
    release_dir,
    request_project,
    sql,
    unique_name,
    wait_for_message,
    wait_for_project,
)

#: Short enough that a release that never starts is given up on quickly.
HEALTH_TIMEOUT_SECONDS = 10


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStackProcess]:
    """A stack of its own: a short health timeout, and servers the tests may reconfigure."""
    local = LocalStackProcess(
        new_state_dir("failures"),
        env={
            "ORCH_LLM__PROVIDER": "offline",
            "ORCH_DEPLOYER__HEALTH_TIMEOUT_SECONDS": str(HEALTH_TIMEOUT_SECONDS),
        },
    )
    local.start()
    own_port_range(local)
    yield local
    local.stop()


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def commit_all(workdir: Path, message: str) -> str:
    git(workdir, "add", "--all")
    git(workdir, "-c", "user.name=Someone", "-c", "user.email=someone@example.com",
        "commit", "--quiet", "-m", message)
    return git(workdir, "rev-parse", "HEAD")


def publish(stack: LocalStackProcess, event: DeployRequested) -> None:
    assert stack.info is not None
    info = stack.info

    async def send() -> None:
        client = await admin_nats(info)
        try:
            await JetStreamPublisher.from_client(client).publish(event)
        finally:
            await client.close()

    asyncio.run(send())


def wait_for_timeline(stack: LocalStackProcess, project_id: str, event_type: str,
                      timeout: float = 300) -> dict[str, Any]:
    """The CLI's `status --json` once the project's timeline holds `event_type`.

    The wait polls the timeline table (one cheap query a second) and the CLI, a whole Python
    process, runs once the event is there: spawning it every second loaded the two cores the
    deploy being waited for runs on. The answer still comes from the CLI, as a user sees it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sql(stack, "SELECT 1 FROM project_events WHERE project_id = %s AND event_type = %s",
               project_id, event_type):
            status = dict(stack.status(project_id))
            timeline: list[dict[str, Any]] = status["timeline"]  # type: ignore[assignment]
            assert any(entry["type"] == event_type for entry in timeline), status
            return status
        time.sleep(1)
    status = dict(stack.status(project_id))
    raise AssertionError(f"no {event_type} in the timeline after {timeout}s: {status}")


def assert_told(stack: LocalStackProcess, project_id: str, *phrases: str) -> None:
    """The user got a failure message naming the cause.

    Other failure messages may come first (the ops health sweep reports the service down
    while a release is being swapped), so any failure message naming every phrase counts.
    """
    wait_for_message(stack.state_dir, project_id, "failure")
    deadline = time.monotonic() + 30
    texts: list[str] = []
    while time.monotonic() < deadline:
        texts = [
            m["text"] for m in chat_messages(stack.state_dir, project_id)
            if m["notification"]["kind"] == "failure"
        ]
        if any(all(phrase in text for phrase in phrases) for text in texts):
            return
        time.sleep(0.3)
    raise AssertionError(f"no failure message names {phrases}: {texts}")


# ---------------------------------------------------------------- (a) health check fails


def test_release_that_does_not_start_is_rolled_back_and_the_old_one_keeps_serving(
    stack: LocalStackProcess,
) -> None:
    name = unique_name("rollback")
    project_id, flow_id = request_project(
        stack, f"An HTTP API that keeps my notes over REST, called {name}"
    )
    live = wait_for_project(stack, project_id)
    assert live["state"] == "active", live
    ((spec, clone_url, good_commit, server, host, port),) = sql(
        stack,
        "SELECT spec, repo_clone_url, code_commit, server_name, host, port FROM projects "
        "WHERE id = %s", project_id,
    )

    # A developer pushes a release whose start command exits at once.
    with tempfile.TemporaryDirectory(prefix="e2e-push-") as tmp:
        workdir = Path(tmp) / "work"
        git(Path(tmp), "clone", "--quiet", clone_url, str(workdir))
        manifest = json.loads((workdir / "deploy.json").read_text())
        manifest["start"] = ["python", "-c", "raise SystemExit('this release cannot start')"]
        (workdir / "deploy.json").write_text(json.dumps(manifest, indent=2) + "\n")
        broken_commit = commit_all(workdir, "Start command that exits")
        # The stack's git daemon serves reads only; a push goes to the bare repository's path.
        assert stack.info is not None
        bare = Path(stack.info.git_base_dir) / Path(clone_url).name
        git(workdir, "push", "--quiet", str(bare), "HEAD:main")

    publish(stack, DeployRequested(
        correlation_id=uuid.UUID(flow_id), actor="e2e:redeploy", project_id=uuid.UUID(project_id),
        spec=ProjectSpec.model_validate(spec), clone_url=clone_url, commit=broken_commit,
        server_name=server, host=host, port=port,
    ))

    # The deployer emits both outcomes; the coordinator may record them in either order.
    wait_for_timeline(stack, project_id, "deploy.failed")
    status = wait_for_timeline(stack, project_id, "deploy.rolled_back")
    types = [entry["type"] for entry in status["timeline"]]
    assert "deploy.failed" in types, types
    # The service never stopped being reachable, so the project is still live; the failed
    # release is recorded as its error and the user is told.
    assert status["state"] == "active", status
    assert status["url"] == live["url"]
    assert "Deploy failed" in status["error"], status
    assert "previous release is still serving" in status["error"], status
    assert_told(stack, project_id, "Deploy failed", "previous release is still serving")

    assert get_json(f"{live['url']}/health")["version"] == good_commit
    assert os.readlink(release_dir(stack, live["slug"])).endswith(good_commit[:12])
    rows = dict(sql(stack, "SELECT commit, status FROM deployments WHERE project_id = %s",
                    project_id))
    assert rows == {good_commit: "succeeded", broken_commit: "rolled_back"}, rows


# ---------------------------------------------------------------- (b) tests do not pass


def test_code_whose_tests_fail_is_not_deployed(stack: LocalStackProcess) -> None:
    assert stack.info is not None
    name = unique_name("red-tests")
    # The repository exists already (say, imported by hand) and holds a test that fails;
    # the scaffold is committed on top of it, so the engineer's test run finds it.
    bare = Path(stack.info.git_base_dir) / f"{name}.git"
    git(Path(stack.info.git_base_dir), "init", "--quiet", "--bare", "--initial-branch=main",
        str(bare))
    with tempfile.TemporaryDirectory(prefix="e2e-seed-") as tmp:
        workdir = Path(tmp)
        git(workdir, "init", "--quiet", "--initial-branch=main")
        (workdir / "tests").mkdir()
        (workdir / "tests" / "test_release_gate.py").write_text(
            "def test_release_gate():\n    assert 1 + 1 == 3, 'the release gate is closed'\n"
        )
        commit_all(workdir, "A test that fails")
        git(workdir, "push", "--quiet", str(bare), "HEAD:main")

    project_id, _ = request_project(stack, f"An HTTP API that keeps my notes, called {name}")
    status = wait_for_project(stack, project_id)
    assert status["state"] == "failed", status
    assert "Code failed" in status["error"] and "test_release_gate" in status["error"], status
    assert_told(stack, project_id, "Code failed", "test_release_gate")
    types = [entry["type"] for entry in status["timeline"]]
    assert "project.code.failed" in types and "deploy.requested" not in types, types
    assert not (stack.state_dir / "deployments" / name).exists()
    assert sql(stack, "SELECT 1 FROM deployments WHERE project_id = %s", project_id) == []


# ---------------------------------------------------------------- (d) no capacity


def test_no_server_with_room_fails_the_project_with_what_to_do(stack: LocalStackProcess) -> None:
    sql(stack, "UPDATE servers SET capacity = 0 WHERE name = 'local'")
    try:
        project_id, _ = request_project(
            stack, f"An HTTP API that keeps my notes, called {unique_name('no-room')}"
        )
        status = wait_for_project(stack, project_id, timeout=120)
    finally:
        sql(stack, "UPDATE servers SET capacity = 100 WHERE name = 'local'")
    assert status["state"] == "failed", status
    assert "No server for this project" in status["error"], status
    assert "no server with free capacity" in status["error"], status
    assert "orchestrator servers add" in status["error"], status
    assert_told(stack, project_id, "no server with free capacity", "orchestrator servers add")
    assert sql(stack, "SELECT 1 FROM port_allocations WHERE project_id = %s", project_id) == []


# ---------------------------------------------------------------- (c) GitHub says 401


class ThreadedFakeGitHub:
    """The fake GitHub on its own event loop, so the synchronous test can wait meanwhile."""

    def __init__(self, token: str) -> None:
        self.server = FakeGitHub(token, clone_url_for=lambda name: f"git://127.0.0.1/{name}.git")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self._loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def test_github_refusing_the_token_fails_the_project_with_its_message() -> None:
    wrong_token = f"ghp_revoked{uuid.uuid4().hex}"
    with ThreadedFakeGitHub(token=f"ghp_valid{uuid.uuid4().hex}") as github:
        local = LocalStackProcess(
            new_state_dir("github"),
            env={
                "ORCH_LLM__PROVIDER": "offline",
                "ORCH_REPO_HOST": "github",
                "ORCH_REPO_GITHUB_API_URL": github.base_url,
                "ORCH_REPO_GITHUB_OWNER": "acme",
            },
        )
        try:
            info = local.start()
            # The operator stored a token GitHub no longer accepts.
            vault = VaultClient(info.vault_addr, token=info.vault_token)
            asyncio.run(vault.write_secret("platform/github", {"token": wrong_token}))

            project_id, _ = request_project(
                local, f"An HTTP API that keeps my notes, called {unique_name('gh')}"
            )
            status = wait_for_project(local, project_id, timeout=120)
            assert status["state"] == "failed", status
            assert "Repository failed" in status["error"], status
            assert "Bad credentials" in status["error"], status
            assert "401" in status["error"], status
            assert_told(local, project_id, "Bad credentials")
            assert ("POST", "/orgs/acme/repos") in github.requests or (
                "GET", f"/repos/acme/{status['slug']}") in github.requests, github.requests
            # The refused token is never repeated back: not to the user, not in the timeline.
            shown = json.dumps(chat_messages(local.state_dir, project_id)) + json.dumps(status)
            assert wrong_token not in shown
        finally:
            local.stop()
