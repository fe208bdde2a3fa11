"""What crosses the container boundary carries all of it: the task file, the test reports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from consumers.analyst.rules import Question, decide
from consumers.engineer.agent_io import (
    ContainerResult,
    ContainerTask,
    read_result,
    read_task,
    report_from_json,
    report_to_json,
    write_task,
)
from consumers.engineer.container_tests import parse_junit
from consumers.engineer.test_runner import FailedTest, TestReport


def test_a_revision_s_change_reaches_the_agent_in_the_container(tmp_path: Path) -> None:
    """A change request is what a revision is about; a task file without it would have the
    container's agent rebuild the project from its spec and ignore what the user asked."""
    spec = decide("An HTTP service that shortens URLs and counts visits", [])
    assert not isinstance(spec, Question)
    task = ContainerTask("p-1", spec, 12, change="Add a /stats endpoint with the top ten links")
    write_task(tmp_path, task)
    assert read_task(tmp_path) == task


def test_a_test_report_keeps_the_names_of_the_passed_tests() -> None:
    """The coder in the container checks the acceptance tests by name against the host's
    reports: without the names it could not tell them from a filler test."""
    report = TestReport(
        passed=2,
        failed=1,
        failures=(FailedTest("tests.test_calc::test_subtract", "8 != 2"),),
        passed_tests=("tests.test_acceptance::test_http_check[add]", "tests.test_calc::test_add"),
    )
    assert report_from_json(report_to_json(report)) == report


def test_the_test_container_names_the_tests_that_passed() -> None:
    junit = ET.fromstring(  # noqa: S314 - a literal written here, not untrusted input
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_acceptance" name="test_http_check[add]"/>'
        '<testcase classname="tests.test_calc" name="test_subtract">'
        '<failure message="assert 8 == 2">assert 8 == 2</failure></testcase>'
        '<testcase classname="tests.test_calc" name="test_later"><skipped/></testcase>'
        "</testsuite></testsuites>"
    )
    report = parse_junit(junit, "")
    assert (report.passed, report.failed, report.skipped) == (1, 1, 1)
    assert report.passed_tests == ("tests.test_acceptance::test_http_check[add]",)


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


def test_the_coding_container_s_result_is_read_as_untrusted(tmp_path: Path) -> None:
    """The container writes its result where the host reads it: a symlink would have the host
    (root) read a file of the container's choosing, and garbage must say what is wrong."""
    result = tmp_path / "result.json"
    assert read_result(tmp_path) is None

    secret = tmp_path / "host-only.json"
    secret.write_text(json.dumps({"iterations": 1, "summary": "host file", "reason": ""}))
    result.symlink_to(secret)
    with pytest.raises(ValueError, match=r"result\.json cannot be opened as a file"):
        read_result(tmp_path)

    result.unlink()
    for garbage, said in (
        ("[1, 2]", "is not a JSON object"),
        ('{"iterations": "many"', "is not JSON"),
        ('{"iterations": [1]}', "lacks a field or has a wrong one"),
        (" " * 1_000_001, "is larger than"),
    ):
        result.write_text(garbage)
        with pytest.raises(ValueError, match=said):
            read_result(tmp_path)

    result.write_text(json.dumps({"iterations": 2, "summary": "Implemented it", "reason": ""}))
    assert read_result(tmp_path) == ContainerResult(2, "Implemented it", (), "")
