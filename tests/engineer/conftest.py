"""Fixtures of the engineer tests: small real repositories on the session's git daemon."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from contracts.events import CodeRequested
from contracts.spec import ProjectSpec, ServiceKind
from infra.stack.git_daemon import GitDaemon
from tests.engineer.docker_engine import DockerEngine

#: A service in the shape the repo step scaffolds: requirements, app package started by
#: `python -m app` (deploy.json), pytest tests.
SERVICE_FILES: dict[str, str] = {
    "requirements.txt": "fastapi\nhttpx\npytest\nuvicorn\n",
    "pytest.ini": "[pytest]\npythonpath = .\ntestpaths = tests\n",
    "deploy.json": '{"start": ["python", "-m", "app"], "health_path": "/health"}\n',
    "app/__init__.py": "",
    # Started by the engineer before a commit, as the deployer starts it.
    "app/__main__.py": (
        "import os\n\n"
        "import uvicorn\n\n"
        "from app.main import app\n\n"
        "uvicorn.run(app, host=os.environ['HOST'], port=int(os.environ['PORT']))\n"
    ),
    "app/main.py": (
        "from fastapi import FastAPI\n\n"
        "from app.calc import add\n\n"
        "app = FastAPI()\n\n\n"
        "@app.get('/health')\n"
        "def health() -> dict[str, str]:\n"
        "    return {'status': 'ok'}\n\n\n"
        "@app.get('/add')\n"
        "def add_endpoint(a: int, b: int) -> dict[str, int]:\n"
        "    return {'sum': add(a, b)}\n"
    ),
    "app/calc.py": "def add(a: int, b: int) -> int:\n    return a + b\n",
    "tests/__init__.py": "",
    "tests/test_health.py": (
        "from fastapi.testclient import TestClient\n\n"
        "from app.main import app\n\n\n"
        "def test_health() -> None:\n"
        "    assert TestClient(app).get('/health').json() == {'status': 'ok'}\n\n\n"
        "def test_add() -> None:\n"
        "    assert TestClient(app).get('/add?a=2&b=3').json() == {'sum': 5}\n"
    ),
}

#: The same service with a missing feature: `subtract` is specified by a test, not written.
BROKEN_FILES: dict[str, str] = {
    **SERVICE_FILES,
    "tests/test_calc.py": (
        "from app.calc import add\n\n\n"
        "def test_add() -> None:\n"
        "    assert add(1, 1) == 2\n\n\n"
        "def test_subtract() -> None:\n"
        "    from app.calc import subtract\n\n"
        "    assert subtract(5, 3) == 2\n"
    ),
}

RepoFactory = Callable[[Mapping[str, str]], tuple[str, str]]


def git(*args: str, cwd: Path) -> str:
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "repo", "GIT_AUTHOR_EMAIL": "repo@test.invalid",
        "GIT_COMMITTER_NAME": "repo", "GIT_COMMITTER_EMAIL": "repo@test.invalid",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


@pytest.fixture
def make_repo(git_daemon: GitDaemon, tmp_path: Path) -> RepoFactory:
    """Create a bare repo in the git daemon's directory with one scaffold commit; return (url, sha).

    The URL is the repository's `file://` path: the daemon serves reads only, and the engineer
    must push its commit.
    """

    def create(files: Mapping[str, str]) -> tuple[str, str]:
        name = f"engineer-{uuid.uuid4().hex[:10]}"
        bare = git_daemon.path_for(name)
        bare.parent.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=bare.parent)
        work = tmp_path / name
        work.mkdir()
        for path, content in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(content)
        git("init", "--quiet", "--initial-branch=main", cwd=work)
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "-m", "scaffold", cwd=work)
        git("push", "--quiet", str(bare), "main", cwd=work)
        return bare.as_uri(), git("rev-parse", "HEAD", cwd=work)

    return create


def code_requested(clone_url: str, base_commit: str) -> CodeRequested:
    spec = ProjectSpec(
        name="Calculator",
        slug="calculator",
        summary="Adds and subtracts numbers over HTTP.",
        kinds=(ServiceKind.HTTP,),
        acceptance_criteria=("GET /add returns the sum", "subtract(a, b) returns a - b"),
    )
    flow = uuid.uuid4()
    return CodeRequested(
        correlation_id=flow,
        causation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=uuid.uuid4(),
        spec=spec,
        clone_url=clone_url,
        base_commit=base_commit,
    )


async def no_heartbeat() -> None:
    """The service under test needs a heartbeat; these tests have no broker to tell."""


#: The busybox stand-in "agent": the adapter's crash path without the real image's cost.
AGENT_SCRIPT = """#!/bin/sh
set -e
echo "agent: model ${ORCH_LLM__MODEL}"
grep -q '"max_iterations"' /agent-io/task.json && echo "agent: task received"
sleep "${AGENT_SLEEP:-0}"
if [ -n "${AGENT_EXIT:-}" ]; then echo "agent: crashing"; exit "$AGENT_EXIT"; fi
cat > /workspace/app/calc.py <<'PY'
def add(a: int, b: int) -> int:
    return a + b


def subtract(a: int, b: int) -> int:
    return a - b
PY
cat > /agent-io/result.json <<JSON
{"iterations": 1, "summary": "Implemented subtract in a container", "reason": "",
 "usage": [{"model": "${ORCH_LLM__MODEL}", "prompt_tokens": 120, "completion_tokens": 30,
            "cost_usd": "0.000105"}]}
JSON
echo "agent: done"
"""
TEST_IMAGE = "orchestrator-test/busybox-agent:1"


@pytest.fixture(scope="package")
def docker_engine() -> Iterator[DockerEngine]:
    """A real dockerd (see tests/engineer/docker_engine.py for the flags) with the test image."""
    # Short path: the unix socket path must stay under 108 bytes.
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp")))
    try:
        engine.start()
        engine.import_busybox_image(TEST_IMAGE, AGENT_SCRIPT)
        yield engine
    finally:
        engine.stop()
