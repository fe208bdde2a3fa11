"""The on-server acceptance check runner: JSON-subset matching, captures, and what a failure says.

`roles/acceptance_checks/files/acceptance_run.py` runs on deploy targets with their python3 and
no package of ours, so it is loaded from its file, as the playbook ships it, and run against a
real HTTP server on a random port.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from contracts.spec import HttpCheck, HttpStep, WorkerCheck

SCRIPT = (
    Path(__file__).resolve().parents[2]
    / "infra/ansible/roles/acceptance_checks/files/acceptance_run.py"
)


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("acceptance_run", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load()


@pytest.mark.parametrize(
    ("expected", "actual", "result"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1, "c": 3}, {"a": 1, "b": 2}, False),
        ({"a": {"b": [1]}}, {"a": {"b": [2, 1], "c": 0}}, True),
        ([{"id": 2}], [{"id": 1}, {"id": 2, "x": "y"}], True),
        ([{"id": 3}], [{"id": 1}, {"id": 2}], False),
        ([], [], True),
        ({"ok": True}, {"ok": 1}, False),  # JSON true is not 1
        ({"n": 1}, {"n": 1.0}, True),
        ({"a": 1}, [{"a": 1}], False),
        ("x", None, False),
    ],
)
def test_json_subset(expected: Any, actual: Any, result: bool) -> None:
    assert runner.matches(expected, actual) is result


def test_captured_values_fill_paths_bodies_and_expectations() -> None:
    captured = {"id": 7, "name": "a/b@evil"}
    assert runner.fill({"id": "{id}", "label": "#{id}"}, captured) == {"id": 7, "label": "#7"}
    assert runner.fill(["{id}", {"n": "{name}"}], captured) == [7, {"n": "a/b@evil"}]
    # A captured value cannot add a path segment or a host: it is URL-quoted.
    assert runner.fill_path("/items/{name}", captured) == "/items/a%2Fb%40evil"
    assert runner.dig({"items": [{"id": 4}]}, "items.0.id") == 4
    with pytest.raises(runner.CheckFailed, match=r"nothing at 'items\.1\.id'"):
        runner.dig({"items": [{"id": 4}]}, "items.1.id")


class Notes(BaseHTTPRequestHandler):
    """A tiny service: POST /notes stores a note, GET /notes/<id> and GET /notes read them."""

    notes: dict[int, dict[str, Any]] = {}

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        note = {**json.loads(self.rfile.read(length)), "id": len(self.notes) + 1}
        self.notes[note["id"]] = note
        self._send(201, note)

    def do_GET(self) -> None:
        if self.path == "/notes":
            self._send(200, list(self.notes.values()))
        elif self.path.startswith("/notes/") and self.path[7:].isdigit():
            note = self.notes.get(int(self.path[7:]))
            self._send(200 if note else 404, note or {"detail": "not found"})
        elif self.path == "/worker/status":
            self._send(200, {"last_ok": bool(self.notes)})
        else:
            self._send(404, {"detail": "not found", "secret_hint": "x" * 2000})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    Notes.notes = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Notes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def checks(*models: HttpCheck | WorkerCheck) -> list[dict[str, Any]]:
    return [model.model_dump(mode="json") for model in models]


CREATE_AND_READ = HttpCheck(
    name="a note is stored and read back",
    steps=(
        HttpStep(method="POST", path="/notes", body={"text": "hi"}, expect_status=201,
                 capture={"id": "id"}),
        HttpStep(path="/notes/{id}", expect_json={"id": "{id}", "text": "hi"}),
        HttpStep(path="/notes", expect_json=[{"id": "{id}"}]),
    ),
)  # fmt: skip


def test_passing_checks_exit_zero(service: str, capsys: pytest.CaptureFixture[str]) -> None:
    worker = WorkerCheck(name="ran", path="/worker/status", expect_json={"last_ok": True})
    assert runner.run_checks(service, checks(CREATE_AND_READ, worker), timeout=5) == 0
    assert "2 acceptance checks passed" in capsys.readouterr().out


def test_a_wrong_status_names_the_check_step_and_the_truncated_answer(
    service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = HttpCheck(name="totals exist", steps=(HttpStep(path="/totals"),))
    assert runner.run_checks(service, checks(CREATE_AND_READ, missing), timeout=5) == 1
    error = capsys.readouterr().out
    assert error.startswith("acceptance check 'totals exist' failed: step 1 (GET /totals)")
    assert "answered 404, expected 200" in error
    assert '"detail": "not found"' in error
    assert len(error) < 600  # the 2000-character answer is cut


def test_a_missing_field_in_the_answer_fails_with_what_was_expected(
    service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = HttpCheck(
        name="notes have a title",
        steps=(
            HttpStep(method="POST", path="/notes", body={"text": "hi"}, expect_status=201,
                     capture={"id": "id"}),
            HttpStep(path="/notes/{id}", expect_json={"title": "hi"}),
        ),
    )  # fmt: skip
    assert runner.run_checks(service, checks(wrong), timeout=5) == 1
    error = capsys.readouterr().out
    assert "step 2 (GET /notes/1) answered" in error
    assert 'does not contain {"title": "hi"}' in error


def test_a_worker_effect_that_never_appears_fails_after_its_time(
    service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = WorkerCheck(
        name="ran", path="/worker/status", expect_json={"last_ok": True}, within_seconds=1
    )
    assert runner.run_checks(service, checks(worker), timeout=5) == 1
    assert 'last answer: 200 {"last_ok": false}' in capsys.readouterr().out


def test_a_service_that_does_not_answer_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Notes)
    port = server.server_address[1]
    server.server_close()
    dead = HttpCheck(name="alive", steps=(HttpStep(path="/notes"),))
    assert runner.run_checks(f"http://127.0.0.1:{port}", checks(dead), timeout=2) == 1
    assert "GET /notes got no answer" in capsys.readouterr().out
