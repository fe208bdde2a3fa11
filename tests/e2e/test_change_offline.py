"""A change request on a live service, offline, on the real stack through the CLI.

An HTTP API is requested and followed to `active`; then `orchestrator change` asks for a new
collection endpoint. The offline analyst revises the spec, the repo step renders it over the
live commit, the engineer tests that commit, the deployer ships it with rollback armed, and the
live service answers the new endpoint while the old one keeps its data path. The timeline shows
revision 2 with its summary. A change the offline rules cannot express is refused with what to
configure, and the service is left as it was.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tests.e2e.conftest import LocalStackProcess
from tests.e2e.test_pipeline_offline import (
    get_json,
    own_port_range,
    request_project,
    sql,
    unique_name,
    wait_for_message,
    wait_for_project,
)


def revision_status(stack: LocalStackProcess, project_id: str, number: int) -> str | None:
    rows = sql(
        stack,
        "SELECT status FROM project_revisions WHERE project_id = %s AND number = %s",
        project_id,
        number,
    )
    return str(rows[0][0]) if rows else None


def wait_for_revision(
    stack: LocalStackProcess, project_id: str, number: int, states: set[str], timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = revision_status(stack, project_id, number)
        if status in states:
            return status
        time.sleep(1)
    raise AssertionError(
        f"revision {number} not in {states} after {timeout}s: {stack.status(project_id)}"
    )


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 -- our own deployed service
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.status == 201
        created: dict[str, Any] = json.loads(response.read())
    return created


# The stack's start, the first build and two revisions on a shared two-core machine.
@pytest.mark.timeout(1500)
def test_a_live_service_gets_a_new_endpoint_from_a_change_request(
    offline_stack: LocalStackProcess,
) -> None:
    own_port_range(offline_stack)
    name = unique_name("change-api")
    project_id, _ = request_project(
        offline_stack, f"An HTTP API that tracks my expenses, named {name}"
    )
    first = wait_for_project(offline_stack, project_id, timeout=400)
    assert first["state"] == "active", first
    url = str(first["url"])
    ((old_commit,),) = sql(offline_stack, "SELECT code_commit FROM projects WHERE id = %s",
                           project_id)  # fmt: skip

    refused = offline_stack.cli("change", name, "add an endpoint that returns totals per month")
    assert refused.returncode == 0, refused.stderr
    assert wait_for_revision(offline_stack, project_id, 2, {"refused"}, 120) == "refused"
    told = wait_for_message(offline_stack.state_dir, project_id, "failure")
    assert "ORCH_LLM__PROVIDER" in told["text"], told
    assert get_json(f"{url}/health")["version"] == old_commit

    sent = offline_stack.cli("change", name, "add an endpoint /contacts")
    assert sent.returncode == 0, sent.stderr
    assert f"change sent for project {name}" in sent.stdout
    assert wait_for_revision(offline_stack, project_id, 3, {"live", "failed"}, 400) == "live"

    status = offline_stack.status(project_id)
    assert status["state"] == "active", status
    ((new_commit, spec),) = sql(
        offline_stack, "SELECT code_commit, spec FROM projects WHERE id = %s", project_id
    )
    assert new_commit != old_commit
    assert [e["name"] for e in spec["entities"]] == ["Expense", "Contact"]
    assert get_json(f"{url}/health")["version"] == new_commit

    created = post_json(f"{url}/contacts", {"name": "Ana", "phone": "+1 555", "email": "a@b.c"})
    with urllib.request.urlopen(f"{url}/contacts", timeout=5) as response:  # noqa: S310
        listed = json.loads(response.read())
    assert created["name"] == "Ana" and created in listed
    with urllib.request.urlopen(f"{url}/expenses", timeout=5) as response:  # noqa: S310
        assert response.status == 200  # what was there before still answers

    summaries = [str(entry["summary"]) for entry in status["timeline"]]  # type: ignore[index]
    assert "revision 3 requested: add an endpoint /contacts" in summaries
    assert any(
        s.startswith("revision 3 spec: [offline mode] added entity Contact") for s in summaries
    )
    assert any(s.startswith(f"revision 3 live at {url}") for s in summaries)
    assert any(s.startswith("revision 2 refused: offline mode cannot make this change")
               for s in summaries)  # fmt: skip
