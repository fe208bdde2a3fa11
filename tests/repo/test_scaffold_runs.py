"""Each kind's scaffold, as generated, installs, passes its own tests and answers /health.

This is the contract the engineer (offline mode ships the scaffold as is) and the deployer rely
on: a fresh virtualenv, `pip install -r requirements.txt`, `python -m pytest`, then the start
command from deploy.json serving `GET /health`. Scaffolds with the same requirements share a
virtualenv, so the suite creates two (about 10 s each with the local wheel cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers.analyst.rules import decide
from consumers.repo.scaffold import JinjaScaffolder
from contracts.spec import ProjectSpec, Schedule, ServiceKind
from infra.stack.ports import free_port
from infra.stack.postgres_server import PostgresServer
from tests.repo.conftest import make_spec

HTTP, BOT, WORKER = ServiceKind.HTTP, ServiceKind.TELEGRAM_BOT, ServiceKind.WORKER


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a process on a deploy target: nothing of ours leaks in."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", *(k for k in os.environ if k.startswith("PIP_")))
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **extra}


def run(args: list[str], cwd: Path, timeout: float = 300, **env: str) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def venvs() -> dict[str, Path]:
    """Virtualenvs keyed by the hash of the requirements they were created for."""
    return {}


def venv_for(repo: Path, venvs: dict[str, Path], base: Path) -> Path:
    key = hashlib.sha256((repo / "requirements.txt").read_bytes()).hexdigest()[:12]
    if key not in venvs:
        venvs[key] = base / f"venv-{key}"
        # The orchestrator's interpreter (3.11), but none of its packages.
        run([sys.executable, "-m", "venv", str(venvs[key])], cwd=base)
    return venvs[key]


@pytest.mark.parametrize(
    "kinds", [(HTTP,), (BOT,), (WORKER,), (BOT, HTTP, WORKER)], ids=lambda k: "+".join(k)
)
def test_generated_service_installs_passes_its_tests_and_serves_health(
    kinds: tuple[ServiceKind, ...],
    venvs: dict[str, Path],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    started = time.monotonic()
    spec = make_spec(*kinds, slug="family-expenses")
    repo = tmp_path / "repo"
    for path, content in JinjaScaffolder().render(spec).files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(content)
    python = venv_for(repo, venvs, tmp_path_factory.getbasetemp()) / "bin" / "python"

    deploy = json.loads((repo / "deploy.json").read_text())
    run(
        [str(python), "-m", "pip", "install", "-q", "-r", deploy["requirements"]],
        cwd=repo,
        timeout=900,
    )
    output = run([str(python), *deploy["test"][1:]], cwd=repo)
    assert " passed" in output
    assert "failed" not in output
    assert "warning" not in output.lower()

    port = free_port()
    env = clean_env(
        PORT=str(port),
        APP_VERSION="abc1234",
        OPENAI_API_KEY="sk-test",
        REPORT_CHAT_ID="42",
    )
    server = subprocess.Popen(
        [str(python), *deploy["start"][1:]],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = wait_for_health(f"http://127.0.0.1:{port}{deploy['health_path']}", server)
    finally:
        server.terminate()
        logs, _ = server.communicate(timeout=10)
    assert body == {"status": "ok", "service": "family-expenses", "version": "abc1234"}
    if BOT in kinds:
        assert "TELEGRAM_BOT_TOKEN is not set: the bot is idle" in logs
    print(f"{'+'.join(kinds)}: install, tests and start took {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(1500)
def test_a_worker_runs_each_schedule_on_its_own_timing(
    venvs: dict[str, Path], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A spec with a weekly cron schedule and an interval one: the generated project passes its
    own tests (next fire times on an injected clock), and the running service shows both jobs
    at /worker/status, the interval job run at start and the cron job waiting for Monday 09:00."""
    spec = make_spec(WORKER, slug="family-expenses").model_copy(
        update={
            "schedules": (
                Schedule(name="weekly_digest", cron="0 9 * * 1", action="send the digest"),
                Schedule(name="refresh_rates", every_seconds=3600, action="refresh the rates"),
            )
        }
    )
    repo = tmp_path / "repo"
    python, output = install_and_test(spec, repo, venvs, tmp_path_factory.getbasetemp())
    assert "test_a_cron_expression_fires_at_its_next_matching_minute[0 9 * * 1-" in output
    assert "test_the_service_shows_each_schedule PASSED" in output
    assert "failed" not in output

    env = {"OPENAI_API_KEY": "sk-test", "REPORT_CHAT_ID": "42"}
    with serving(python, repo, DATA_DIR=str(tmp_path / "data"), **env) as url:
        deadline = time.monotonic() + 20
        while True:
            status = call("GET", f"{url}/worker/status")[1]
            if status["runs"] >= 1 and status["schedules"]["refresh_rates"]["runs"] >= 1:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
    served_at = datetime.now(UTC)
    rates, digest = status["schedules"]["refresh_rates"], status["schedules"]["weekly_digest"]
    assert (rates["timing"], rates["last_ok"], rates["last_error"]) == ("every 3600 s", True, None)
    assert datetime.fromisoformat(rates["next_run_at"]) > served_at
    assert digest["timing"] == "cron 0 9 * * 1 (UTC)"
    next_digest = datetime.fromisoformat(digest["next_run_at"])
    assert next_digest > served_at
    assert (next_digest.weekday(), next_digest.hour, next_digest.minute) == (0, 9, 0)
    assert next_digest - served_at <= timedelta(days=7)
    # Not run at start: only at a Monday 09:00 (which this test would have to straddle).
    if digest["runs"]:
        ran = datetime.fromisoformat(digest["last_run_at"])
        assert (ran.weekday(), ran.hour, ran.minute) == (0, 9, 0), digest
    # The top-level fields stay those of job(), which existing worker checks read.
    assert status["last_ok"] is True


def wait_for_health(url: str, server: subprocess.Popen[str]) -> object:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read() if server.stdout else ""
            pytest.fail(f"the service exited with {server.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local URL
                return json.load(response)
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within 20 s")


def write_project(spec: ProjectSpec, repo: Path) -> None:
    for path, content in JinjaScaffolder().render(spec).files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(content)


def install_and_test(
    spec: ProjectSpec, repo: Path, venvs: dict[str, Path], base: Path
) -> tuple[Path, str]:
    """`spec`'s project written to `repo`, installed, its tests run: its python and their output."""
    write_project(spec, repo)
    python = venv_for(repo, venvs, base) / "bin" / "python"
    run(
        [str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=repo, timeout=900
    )
    return python, run([str(python), "-m", "pytest", "-vv"], cwd=repo)


@contextmanager
def serving(python: Path, repo: Path, **env: str) -> Iterator[str]:
    """The project's start command on a free port; yields its base URL once /health answers."""
    deploy = json.loads((repo / "deploy.json").read_text())
    port = free_port()
    server = subprocess.Popen(
        [str(python), *deploy["start"][1:]],
        cwd=repo,
        env=clean_env(PORT=str(port), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_health(f"http://127.0.0.1:{port}/health", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.communicate(timeout=10)


def call(method: str, url: str, body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - a local http URL
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local URL
        return response.status, json.load(response)


def test_the_offline_specs_checks_pass_as_the_generated_projects_tests(tmp_path: Path) -> None:
    """Quick form of the test below, for every kind's checks (the bot's included): the rendered
    tests run with this interpreter, whose packages cover the generated requirements."""
    spec = decide("An API and a Telegram bot for my expenses, with a daily background job", [])
    assert isinstance(spec, ProjectSpec)
    write_project(spec, tmp_path)
    output = run(
        [sys.executable, "-m", "pytest", "-vv", "-p", "no:cacheprovider", "-p", "no:asyncio"],
        cwd=tmp_path,
    )
    assert "test_acceptance.py::test_http_check[GET /health answers ok] PASSED" in output
    assert "test_acceptance.py::test_bot_checks_in_order PASSED" in output
    assert "test_acceptance.py::test_worker_check" in output
    assert "test_bot.py::test_list_shows_what_add_stored PASSED" in output
    assert "failed" not in output


# A fresh virtualenv installs the pinned requirements from the package index: slow on a
# loaded machine, hence the longer bound.
@pytest.mark.timeout(1500)
def test_an_offline_spec_persists_its_records_and_passes_its_acceptance_checks(
    postgres_server: PostgresServer,
    venvs: dict[str, Path],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """What the offline analyst writes for "an API for expenses with a daily job" installs and
    passes its own tests, acceptance checks included; its records outlive the process in a
    SQLite file under DATA_DIR, and go to PostgreSQL when DATABASE_URL names it."""
    spec = decide("An API for my expenses, with a daily background job", [])
    assert isinstance(spec, ProjectSpec)
    assert spec.checks
    repo = tmp_path / "repo"
    python, output = install_and_test(spec, repo, venvs, tmp_path_factory.getbasetemp())
    assert "test_acceptance.py::test_http_check" in output
    assert "test_acceptance.py::test_worker_check" in output
    assert "failed" not in output

    expense = {"amount": 7.5, "category": "food", "spent_on": "2024-02-01", "note": "lunch"}
    data_dir = tmp_path / "data"
    with serving(python, repo, DATA_DIR=str(data_dir)) as url:
        status, created = call("POST", f"{url}/expenses", expense)
        assert status == 201
        # "a daily background job" is a schedule of one day, which the worker runs on.
        assert call("GET", f"{url}/worker/status")[1]["interval_seconds"] == 86400.0
    with serving(python, repo, DATA_DIR=str(data_dir)) as url:
        assert call("GET", f"{url}/expenses") == (200, [created])
    assert (data_dir / "app.db").is_file()

    name = f"generated_{uuid.uuid4().hex[:12]}"
    database_url = postgres_server.create_database(name)
    try:
        with serving(
            python, repo, DATA_DIR=str(tmp_path / "unused"), DATABASE_URL=database_url
        ) as url:
            status, stored = call("POST", f"{url}/expenses", expense)
            assert status == 201
        with serving(python, repo, DATABASE_URL=database_url) as url:
            assert call("GET", f"{url}/expenses/{stored['id']}") == (200, stored)
        plain_url = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain_url) as connection:
            rows = connection.execute('SELECT id, data FROM "expenses"').fetchall()
        assert [(row[0], json.loads(row[1])) for row in rows] == [(stored["id"], expense)]
        assert not (tmp_path / "unused").exists()
    finally:
        postgres_server.drop_database(name)
