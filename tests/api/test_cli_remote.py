"""`orchestrator` in remote mode (issue 11): the real CLI, as a subprocess, against the real API
served on a random port over JetStream, PostgreSQL and OpenBao. The CLI gets only the API's URL
and a token (`ORCH_REMOTE__URL`, `ORCH_REMOTE__TOKEN`): no bus, database or Vault credentials."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from infra.db.models import ProjectState
from producers.cli.api_client import api_client
from producers.cli.endpoints import RemoteApi
from tests.api.conftest import ApiUser, SeedProject
from tests.api.test_api import last_event

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Done:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)


@dataclass(frozen=True)
class RemoteCli:
    url: str
    token: str
    state_dir: Path

    async def __call__(self, *args: str, stdin: str = "") -> Done:
        """Run `orchestrator *args` without blocking the loop that serves the API."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        env |= {
            "ORCH_REMOTE__URL": self.url,
            "ORCH_REMOTE__TOKEN": self.token,
            "ORCH_STATE_DIR": str(self.state_dir),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "producers.cli", *args,
            cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 120)
        assert process.returncode is not None
        return Done(process.returncode, out.decode(), err.decode())


@pytest.fixture
def cli(base_url: str, alice: ApiUser, tmp_path: Path) -> RemoteCli:
    return RemoteCli(base_url, alice.token, tmp_path / "no-local-stack")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


async def test_request_publishes_through_the_api_and_answers_the_ids(
    cli: RemoteCli, nc: Client
) -> None:
    answer = (await cli("request", "a todo list over HTTP", "--json")).json()

    _, event = await last_event(nc, "INTENTS", "intents.project.requested")
    assert event["project_id"] == answer["project_id"]
    assert event["correlation_id"] == answer["flow_id"]


async def test_the_same_idempotency_key_sent_again_is_the_same_project(
    base_url: str, alice: ApiUser
) -> None:
    key = str(uuid.uuid4())
    async with api_client(RemoteApi(base_url, alice.token)) as api:
        first = await api.post("/projects", {"description": "a notes api"}, key)
        again = await api.post("/projects", {"description": "a notes api"}, key)

    assert again["project_id"] == first["project_id"]


async def test_status_projects_and_follow_print_what_the_local_cli_prints(
    cli: RemoteCli, alice: ApiUser, bob: ApiUser, seed_project: SeedProject
) -> None:
    project = await seed_project(
        alice.user_id, state=ProjectState.ACTIVE, timeline=("spec written", "deployed")
    )
    await seed_project(bob.user_id, slug="bobs-api")

    status = (await cli("status", "todo-api", "--json")).json()
    assert status["id"] == str(project.id)
    assert status["state"] == "active"
    assert [t["summary"] for t in status["timeline"]] == ["spec written", "deployed"]

    listed = (await cli("projects", "--json")).json()
    assert [p["slug"] for p in listed] == ["todo-api"]

    followed = await cli("status", "todo-api", "--follow", "--json", "--interval", "0.1")
    assert followed.code == 0, followed.stderr
    records = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [r["kind"] for r in records] == ["entry", "entry", "settled"]
    assert records[-1]["state"] == "active"

    text = await cli("status", "todo-api")
    assert text.code == 0
    assert f"project  {project.id}  todo-api" in text.stdout

    foreign = await cli("status", "bobs-api")
    assert foreign.code == 1
    assert "orchestrator status:" in one_line(foreign.stderr)


async def test_secrets_go_through_the_api_and_list_by_name(
    cli: RemoteCli, alice: ApiUser, seed_project: SeedProject
) -> None:
    project = await seed_project(alice.user_id, state=ProjectState.AWAITING_SECRETS)

    stored = await cli("secrets", "set", "todo-api", "BOT_TOKEN", stdin="s3cret\n")
    assert stored.code == 0, stored.stderr

    names = (await cli("secrets", "list", "todo-api", "--json")).json()
    assert names["project_id"] == str(project.id)
    assert names["stored"] == ["BOT_TOKEN"]


async def test_an_operation_the_state_rules_out_prints_the_apis_reason(
    cli: RemoteCli, alice: ApiUser, seed_project: SeedProject
) -> None:
    await seed_project(alice.user_id, state=ProjectState.AWAITING_ANSWER)

    refused = await cli("retry", "todo-api")

    assert refused.code == 1
    line = one_line(refused.stderr)
    assert line.startswith("orchestrator retry: ")
    assert "fail" in line


async def test_a_refused_token_is_one_line_and_exit_1(cli: RemoteCli) -> None:
    refused = await RemoteCli(cli.url, "orch_not-a-real-token", cli.state_dir)("projects")

    assert refused.code == 1
    assert "the API refused the token: " in one_line(refused.stderr)


async def test_an_unreachable_api_names_its_url_in_one_line(cli: RemoteCli) -> None:
    nowhere = RemoteCli("http://127.0.0.1:9", cli.token, cli.state_dir)

    done = await nowhere("status", "todo-api")

    assert done.code == 1
    assert "cannot reach the API at http://127.0.0.1:9" in one_line(done.stderr)


async def test_a_command_the_api_does_not_serve_says_it_needs_direct_access(
    cli: RemoteCli,
) -> None:
    done = await cli("lag")

    assert done.code == 1
    assert "needs direct access to NATS and PostgreSQL" in one_line(done.stderr)


async def test_a_repository_off_the_git_host_is_refused_with_the_apis_detail(
    cli: RemoteCli,
) -> None:
    done = await cli("adopt", "https://example.com/someone/notes.git")

    assert done.code == 1
    assert one_line(done.stderr).startswith("orchestrator adopt: ")
