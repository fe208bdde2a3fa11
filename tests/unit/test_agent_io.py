"""The task file the host hands the coding agent in its container carries the whole task."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.analyst.rules import Question, decide
from consumers.engineer.agent_io import ContainerTask, read_task, write_task


def test_a_revision_s_change_reaches_the_agent_in_the_container(tmp_path: Path) -> None:
    """A change request is what a revision is about; a task file without it would have the
    container's agent rebuild the project from its spec and ignore what the user asked."""
    spec = decide("An HTTP service that shortens URLs and counts visits", [])
    assert not isinstance(spec, Question)
    task = ContainerTask("p-1", spec, 12, change="Add a /stats endpoint with the top ten links")
    write_task(tmp_path, task)
    assert read_task(tmp_path) == task


def test_the_task_says_whether_the_host_serves_memory_and_only_true_means_yes(
    tmp_path: Path,
) -> None:
    spec = decide("An HTTP service that shortens URLs and counts visits", [])
    assert not isinstance(spec, Question)
    write_task(tmp_path, ContainerTask("p-1", spec, 12, memory=True))
    assert read_task(tmp_path).memory is True

    task_file = tmp_path / "task.json"
    payload = json.loads(task_file.read_text())
    for absent in ("yes", 1, None):
        payload["memory"] = absent
        task_file.write_text(json.dumps(payload))
        assert read_task(tmp_path).memory is False
