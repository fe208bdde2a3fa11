"""Redeploy, rollback and retry through the whole offline stack, as a person runs them.

Every step is the real thing: `orchestrator redeploy|rollback|retry` publishes the intent, the
coordinator checks it and commands the deployer, Ansible deploys over SSH to the local sshd.
- the project's current commit again is a no-op: the same release keeps running, in the same
  supervisor process;
- a new commit pushed to the project's repository and redeployed becomes the live release,
  and a rollback serves the one before it again;
- a project that failed for want of a server resumes from that step once there is room, and
  goes live.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import LocalStackProcess
from .test_pipeline_offline import (
    get_json,
    own_port_range,
    release_dir,
    request_project,
    sql,
    unique_name,
    wait_for_project,
)


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def run_cli(stack: LocalStackProcess, *args: str) -> str:
    result = stack.cli(*args)
    assert result.returncode == 0, f"orchestrator {' '.join(args)}: {result.stderr}"
    return result.stdout


def wait_for_summary(stack: LocalStackProcess, project_id: str, text: str,
                     timeout: float = 600) -> str:
    """The first timeline entry whose summary contains `text`, once the coordinator wrote it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sql(stack, "SELECT summary FROM project_events WHERE project_id = %s "
                   "AND summary LIKE %s ORDER BY id LIMIT 1", project_id, f"%{text}%")
        if rows:
            return str(rows[0][0])
        time.sleep(1)
    timeline = sql(stack, "SELECT summary FROM project_events WHERE project_id = %s ORDER BY id",
                   project_id)
    raise AssertionError(f"no timeline entry containing {text!r} after {timeout}s: {timeline}")


def supervisor_pid(stack: LocalStackProcess, slug: str) -> str:
    return (stack.state_dir / "deployments" / slug / "run" / "supervisor.pid").read_text().strip()


def push_new_commit(stack: LocalStackProcess, clone_url: str) -> str:
    """A developer's commit on the project's main branch (a README change: still healthy)."""
    assert stack.info is not None
    with tempfile.TemporaryDirectory(prefix="e2e-push-") as tmp:
        workdir = Path(tmp) / "work"
        git(Path(tmp), "clone", "--quiet", clone_url, str(workdir))
        with (workdir / "README.md").open("a", encoding="utf-8") as readme:
            readme.write("\nSecond release.\n")
        git(workdir, "add", "--all")
        git(workdir, "-c", "user.name=Someone", "-c", "user.email=someone@example.com",
            "commit", "--quiet", "-m", "Second release")
        # The stack's git daemon serves reads only; a push goes to the bare repository's path.
        bare = Path(stack.info.git_base_dir) / Path(clone_url).name
        git(workdir, "push", "--quiet", str(bare), "HEAD:main")
        return git(workdir, "rev-parse", "HEAD")


# Four deploys in a row; on a machine shared with other stacks one deploy takes minutes.
@pytest.mark.timeout(1800)
def test_redeploy_is_a_noop_then_a_new_release_and_rollback_restores_the_previous(
    offline_stack: LocalStackProcess,
) -> None:
    stack = offline_stack
    own_port_range(stack)
    project_id, _ = request_project(
        stack, f"An HTTP API that keeps my notes over REST, called {unique_name('ops')}"
    )
    # A loaded machine (five stacks deploying at once) can take minutes for a first deploy.
    live = wait_for_project(stack, project_id, timeout=600)
    assert live["state"] == "active", live
    slug, url = str(live["slug"]), str(live["url"])
    ((clone_url, first),) = sql(
        stack, "SELECT repo_clone_url, code_commit FROM projects WHERE id = %s", project_id
    )
    pid = supervisor_pid(stack, slug)

    # The current commit again: nothing is restarted.
    out = run_cli(stack, "redeploy", project_id)
    assert out.startswith(f"redeploy requested for project {project_id}"), out
    assert "nothing was restarted" in wait_for_summary(stack, project_id, "already live")
    assert supervisor_pid(stack, slug) == pid
    assert os.readlink(release_dir(stack, slug)).endswith(first[:12])
    assert get_json(f"{url}/health")["version"] == first

    # A rollback needs a previous release; there is none yet.
    refused = stack.cli("rollback", project_id)
    assert refused.returncode == 1 and "no previous release" in refused.stderr, refused

    # A new commit on the repository, redeployed, becomes the live release.
    second = push_new_commit(stack, clone_url)
    run_cli(stack, "redeploy", project_id, "--commit", second)
    wait_for_summary(stack, project_id, f"redeployed {second[:8]}")
    assert get_json(f"{url}/health")["version"] == second
    assert os.readlink(release_dir(stack, slug)).endswith(second[:12])

    # The rollback serves the first release again.
    run_cli(stack, "rollback", project_id)
    wait_for_summary(stack, project_id, f"rolled back to {first[:8]}")
    assert get_json(f"{url}/health")["version"] == first
    assert os.readlink(release_dir(stack, slug)).endswith(first[:12])
    ((state, live_commit, previous),) = sql(
        stack, "SELECT state, live_commit, previous_commit FROM projects WHERE id = %s",
        project_id,
    )
    assert (state, live_commit, previous) == ("active", first, second)


@pytest.mark.timeout(1200)
def test_a_failed_project_is_retried_from_the_failed_step_and_goes_live(
    offline_stack: LocalStackProcess,
) -> None:
    stack = offline_stack
    own_port_range(stack)
    sql(stack, "UPDATE servers SET capacity = 0 WHERE name = 'local'")
    try:
        project_id, _ = request_project(
            stack, f"An HTTP API that keeps my notes, called {unique_name('retry')}"
        )
        failed = wait_for_project(stack, project_id, timeout=120)
    finally:
        sql(stack, "UPDATE servers SET capacity = 100 WHERE name = 'local'")
    assert failed["state"] == "failed", failed
    assert "No server for this project" in str(failed["error"]), failed

    out = run_cli(stack, "retry", project_id)
    assert out.startswith(f"retry requested for project {project_id}"), out
    assert "resources step" in wait_for_summary(stack, project_id, "retry from")
    live = stack.wait_for_state(project_id, {"active"}, timeout=600)
    assert live["error"] is None, live
    assert get_json(f"{live['url']}/health")["status"] == "ok"
    # The spec written before the failure was kept: the analyst ran once.
    specs = sql(stack, "SELECT count(*) FROM project_events WHERE project_id = %s "
                "AND event_type = 'project.spec.ready'", project_id)
    assert specs == [(1,)]
