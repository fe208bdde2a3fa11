"""Entry point of the test container: run a workspace's pytest suite and write a JSON report.

Usage (the container's command): `python -m consumers.engineer.container_tests WORKSPACE OUT`.
The container runs with no network, a read-only root and workspace, no capabilities and an
unprivileged uid (see `container_coder.py`); the host reads only `OUT/report.json`, a small
JSON document, so the JUnit XML written by model-controlled tests is parsed in here, never on
the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from consumers.engineer.agent_io import REPORT_FILE, report_to_json
from consumers.engineer.test_runner import FailedTest, TestReport

_DETAIL_CHARS = 1500
_OUTPUT_CHARS = 4000
#: Seconds the suite may run; the host kills the container a little later in any case.
TEST_TIMEOUT_SECONDS = 300.0


def run_pytest(workspace: Path, scratch: Path) -> TestReport:
    junit = scratch / "junit.xml"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", "-o", "junit_family=xunit2"]
    try:
        done = subprocess.run(
            command, cwd=workspace, env=env, capture_output=True, text=True,
            timeout=TEST_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        return _error("pytest", f"timed out after {TEST_TIMEOUT_SECONDS:.0f} s", "")
    output = _tail(done.stdout + done.stderr, _OUTPUT_CHARS)
    if not junit.is_file():
        return _error("pytest", f"exited {done.returncode} without a report", output)
    return parse_junit(ET.parse(junit).getroot(), output)  # noqa: S314 - parsed in the sandbox


def parse_junit(root: ET.Element, output: str) -> TestReport:
    passed = failed = errors = skipped = 0
    failures: list[FailedTest] = []
    passed_tests: list[str] = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        outcome = next(
            (child for child in case if child.tag in ("failure", "error", "skipped")), None
        )
        if outcome is None:
            passed += 1
            passed_tests.append(name)
        elif outcome.tag == "skipped":
            skipped += 1
        else:
            failed += outcome.tag == "failure"
            errors += outcome.tag == "error"
            detail = (outcome.text or outcome.get("message") or "").strip()
            failures.append(FailedTest(name, _tail(detail, _DETAIL_CHARS)))
    return TestReport(passed=passed, failed=failed, errors=errors, skipped=skipped,
                      failures=tuple(failures), output=output, passed_tests=tuple(passed_tests))


def _error(name: str, detail: str, output: str) -> TestReport:
    return TestReport(passed=0, failed=0, errors=1, failures=(FailedTest(name, detail),),
                      output=output)


def _tail(text: str, chars: int) -> str:
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m consumers.engineer.container_tests WORKSPACE OUT", file=sys.stderr)
        return 64
    out = Path(args[1])
    report = run_pytest(Path(args[0]), Path(os.environ.get("TMPDIR", "/tmp")))  # noqa: S108
    (out / REPORT_FILE).write_text(json.dumps(report_to_json(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
