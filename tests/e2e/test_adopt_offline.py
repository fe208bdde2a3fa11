"""Adopting a repository the local forge serves, on the real stack through the CLI.

An HTTP API is requested and followed to `active`, which leaves its repository on the stack's
git daemon. `orchestrator adopt` then brings that repository in as a second project: the repo
step inspects it (deploy.json, .env.example) and imports it unchanged, the engineer runs its own
tests in the sandbox without writing, and the deployer ships the same commit on a port of its
own. Nothing in the adopted project was generated: its commit is the source's.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import LocalStackProcess
from tests.e2e.test_pipeline_offline import (
    get_json,
    own_port_range,
    request_project,
    sql,
    unique_name,
    wait_for_project,
)


# The stack's start, one build and one adoption on a shared two-core machine.
@pytest.mark.timeout(1200)
def test_a_repository_on_the_local_forge_is_adopted_and_goes_live(
    offline_stack: LocalStackProcess,
) -> None:
    own_port_range(offline_stack)
    name = unique_name("adopt-src")
    source_id, _ = request_project(
        offline_stack, f"An HTTP API that keeps my bookmarks over REST, named {name}"
    )
    source = wait_for_project(offline_stack, source_id, timeout=400)
    assert source["state"] == "active", source
    ((source_commit,),) = sql(
        offline_stack, "SELECT code_commit FROM projects WHERE id = %s", source_id
    )
    assert offline_stack.info is not None
    url = f"{offline_stack.info.git_base_url}{name}.git"

    refused = offline_stack.cli("adopt", "https://example.org/someone/else.git")
    assert refused.returncode != 0
    assert "example.org" in refused.stderr, refused.stderr

    sent = offline_stack.cli("adopt", url)
    assert sent.returncode == 0, sent.stderr
    found = re.search(r"project ([0-9a-f-]{36})", sent.stdout)
    assert found, sent.stdout
    adopted_id = found.group(1)

    adopted = wait_for_project(offline_stack, adopted_id, timeout=400)
    assert adopted["state"] == "active", adopted
    ((commit, adopted_from),) = sql(
        offline_stack, "SELECT code_commit, adopted_from FROM projects WHERE id = %s", adopted_id
    )
    assert commit == source_commit  # imported as it is: nothing generated, nothing changed
    assert adopted_from == url
    assert adopted["url"] != source["url"]  # a port of its own
    assert get_json(f"{adopted['url']}/health")["status"] == "ok"
    assert get_json(f"{source['url']}/health")["status"] == "ok"
    timeline = adopted["timeline"]
    assert isinstance(timeline, list)
    summaries = [str(entry["summary"]) for entry in timeline]
    assert any(s.startswith("inspected: deploy.json found; language: Python") for s in summaries)
