"""`orchestrator status --follow` and `request --follow` as a script runs them: a subprocess that
polls a real PostgreSQL while the test moves the project on, the way the coordinator does (state
and timeline entry in one transaction). Every wait is on a printed line or the exit, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import Project, ProjectEvent, ProjectState
from infra.db.session import make_engine, make_sessionmaker
from infra.stack.nats_server import NatsServer
from producers.cli.exit_codes import ExitCode
from tests.project_seed import seed_project

ROOT = Path(__file__).resolve().parents[2]
Sessions = async_sessionmaker[AsyncSession]
#: Starts `orchestrator *args` in the background (with `nats_url=` for commands that publish).
Start = Callable[..., Awaitable["Follower"]]


class Follower:
    """The CLI running in the background, read line by line as it prints."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def until(self, wanted: Callable[[str], bool], timeout: float = 30) -> str:
        async with asyncio.timeout(timeout):
            while True:
                assert self.process.stdout is not None
                raw = await self.process.stdout.readline()
                assert raw, f"the CLI exited before printing it; it printed {self.lines}"
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if wanted(line):
                    return line

    async def exit_code(self, timeout: float = 30) -> int:
        """Read what is left, then the exit code; stderr must hold no traceback."""
        assert self.process.stdout is not None and self.process.stderr is not None
        async with asyncio.timeout(timeout):
            rest = await self.process.stdout.read()
            err = (await self.process.stderr.read()).decode()
            code = await self.process.wait()
        self.lines += rest.decode().splitlines()
        assert "Traceback" not in err, err
        return code


@pytest.fixture
async def sessions(migrated_db: str) -> AsyncIterator[Sessions]:
    engine = make_engine(migrated_db)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def cli(migrated_db: str) -> AsyncIterator[Start]:
    started: list[asyncio.subprocess.Process] = []
    env = {
        **os.environ,
        "ORCH_NATS__URL": "nats://127.0.0.1:1",  # replaced by tests that publish
        "ORCH_DATABASE__URL": migrated_db,
    }

    async def start(*args: str, nats_url: str | None = None) -> Follower:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "producers.cli", *args,
            cwd=ROOT, env={**env, "ORCH_NATS__URL": nats_url or env["ORCH_NATS__URL"]},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        started.append(process)
        return Follower(process)

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def advance(
    sessions: Sessions, project_id: uuid.UUID, state: ProjectState, summary: str, **columns: object
) -> None:
    """Move the project and record the step on its timeline in one transaction."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(Project).where(Project.id == project_id).values(state=state, **columns)
        )
        session.add(_entry(project_id, state, summary))


def _entry(project_id: uuid.UUID, state: ProjectState | None, summary: str) -> ProjectEvent:
    return ProjectEvent(
        project_id=project_id,
        event_id=uuid.uuid4(),
        event_type="project.test",
        actor="coordinator",
        summary=summary,
        state=state,
        occurred_at=datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("last_state", "columns", "code", "last_line"),
    [
        (ProjectState.ACTIVE, {"url": "http://127.0.0.1:21000"}, ExitCode.OK,
         "url      http://127.0.0.1:21000"),
        (ProjectState.FAILED, {"error": "tests failed: 2 of 9"}, ExitCode.FAILED,
         "error    tests failed: 2 of 9"),
    ],
)  # fmt: skip
async def test_status_follow_prints_each_new_entry_once_and_exits_with_the_outcome(
    sessions: Sessions,
    cli: Start,
    last_state: ProjectState,
    columns: dict[str, object],
    code: ExitCode,
    last_line: str,
) -> None:
    project = await seed_project(
        sessions, "tg:1", state=ProjectState.SPECIFYING, slug="notes-api",
        timeline=("requested via cli",),
    )  # fmt: skip
    follower = await cli("status", "notes-api", "--follow", "--interval", "0.2")
    await follower.until(lambda line: line.endswith("requested via cli"))

    await advance(sessions, project.id, ProjectState.BUILDING, "code generation started")
    await follower.until(lambda line: line.endswith("code generation started"))
    await advance(sessions, project.id, last_state, "the last step", **columns)

    assert await follower.exit_code() == code
    assert follower.lines[:2] == [f"project  {project.id}  notes-api", "timeline"]
    entries = [line.split()[-1] for line in follower.lines if line.startswith("  20")]
    assert entries == ["cli", "started", "step"]
    assert f"state    {last_state}  [offline mode]" in follower.lines
    assert follower.lines[-1] == last_line


async def test_status_follow_json_prints_ndjson_and_exits_3_on_a_question(
    sessions: Sessions, cli: Start
) -> None:
    project = await seed_project(
        sessions, "tg:1", state=ProjectState.SPECIFYING, slug="notes-api", timeline=("asked",)
    )
    follower = await cli("status", "notes-api", "--follow", "--json", "--interval", "0.2")
    await follower.until(lambda line: json.loads(line)["summary"] == "asked")
    await advance(
        sessions, project.id, ProjectState.AWAITING_ANSWER, "question: in euros or dollars?"
    )

    assert await follower.exit_code() == ExitCode.WAITING_FOR_YOU
    records = [json.loads(line) for line in follower.lines]
    assert [r["kind"] for r in records] == ["entry", "entry", "settled"]
    assert records[1]["state"] == "awaiting_answer"
    assert set(records[1]) == {"kind", "at", "type", "actor", "state", "summary"}
    assert records[-1] == {
        "kind": "settled", "id": str(project.id), "slug": "notes-api",
        "state": "awaiting_answer", "url": None, "error": None,
        "question": "in euros or dollars?", "missing_secrets": [], "exit_code": 3,
    }  # fmt: skip


async def test_status_follow_stops_on_ctrl_c_with_130_and_no_traceback(
    sessions: Sessions, cli: Start
) -> None:
    await seed_project(
        sessions, "tg:1", state=ProjectState.BUILDING, slug="notes-api", timeline=("building",)
    )
    follower = await cli("status", "notes-api", "--follow", "--interval", "0.2")
    await follower.until(lambda line: line.endswith("building"))

    follower.process.send_signal(signal.SIGINT)

    assert await follower.exit_code() == ExitCode.INTERRUPTED


async def test_request_follow_waits_for_the_project_then_follows_it(
    sessions: Sessions, cli: Start, fresh_nats: NatsServer, nc: object
) -> None:
    follower = await cli(
        "request", "a notes api", "--user", "ops", "--follow", "--json", "--interval", "0.2",
        nats_url=fresh_nats.url,
    )  # fmt: skip
    first = json.loads(await follower.until(lambda line: True))
    assert first["kind"] == "request"
    project_id = uuid.UUID(first["project_id"])

    async with sessions() as session, session.begin():
        session.add(
            Project(
                id=project_id, flow_id=uuid.UUID(first["flow_id"]), user_id="cli:ops",
                description="a notes api", slug="notes-api", state=ProjectState.SPECIFYING,
            )
        )  # fmt: skip
        await session.flush()
        session.add(_entry(project_id, ProjectState.SPECIFYING, "requested via cli"))
    await follower.until(lambda line: json.loads(line).get("summary") == "requested via cli")
    await advance(sessions, project_id, ProjectState.ACTIVE, "live", url="http://127.0.0.1:21001")

    assert await follower.exit_code() == ExitCode.OK
    settled = json.loads(follower.lines[-1])
    assert (settled["state"], settled["url"], settled["exit_code"]) == (
        "active", "http://127.0.0.1:21001", 0
    )  # fmt: skip


async def test_request_follow_ends_failed_when_the_request_is_refused(
    sessions: Sessions, cli: Start, fresh_nats: NatsServer, nc: object
) -> None:
    follower = await cli(
        "request", "a notes api", "--user", "ops", "--follow", "--interval", "0.2",
        nats_url=fresh_nats.url,
    )  # fmt: skip
    line = await follower.until(lambda line: line.startswith("project "))
    project_id = uuid.UUID(line.split()[1])

    async with sessions() as session, session.begin():
        session.add(_entry(project_id, None, "refused: 10 projects today, the next at 09:00"))

    assert await follower.exit_code() == ExitCode.FAILED
    assert follower.lines[-1] == "refused  refused: 10 projects today, the next at 09:00"


async def test_status_piped_into_a_reader_that_stops_early_exits_141_without_a_traceback(
    sessions: Sessions, migrated_db: str
) -> None:
    """`orchestrator status X | head -3`: the reader went away before the CLI printed."""
    await seed_project(
        sessions, "tg:1", state=ProjectState.BUILDING, slug="notes-api", timeline=("building",)
    )
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        finished = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "producers.cli", "status", "notes-api",
            cwd=ROOT, env={**os.environ, "ORCH_NATS__URL": "nats://127.0.0.1:1",
                           "ORCH_DATABASE__URL": migrated_db},
            stdout=write_end, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(finished.communicate(), 60)
    assert finished.returncode == ExitCode.CLOSED_PIPE, err.decode()
    assert err.decode() == ""
