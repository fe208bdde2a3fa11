"""A description in, a running service out: offline mode, through the CLI, on the real stack.

Each kind of service the offline analyst recognises (HTTP API, Telegram bot, background
worker; English and Russian) is requested with `orchestrator request` and followed to `active`.
What a user would check is checked: the URL answers `/health`, the deployed release's `.env`
holds every variable of the spec plus the allocated `PORT` and is readable by its owner only,
and the timeline lists every step in order. A thin description gets a question first, and the
answer resumes the same flow.

The helpers at the top are shared by the other e2e modules of the pipeline.
"""

# A Russian description is test data, not look-alike typos.
# ruff: noqa: RUF001

from __future__ import annotations

import json
import os
import random
import re
import stat
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from infra.console_chat_file import console_chat_path
from infra.stack.bootstrap import LOCAL_PORT_RANGE
from infra.stack.ports import port_is_free
from tests.ports import worker_share

from .conftest import LocalStackProcess

#: The steps a finished project's timeline holds, in the order they must have happened.
#: Resources and repository are allocated in parallel, so only their position relative to
#: the spec and the code is fixed.
BEFORE_PARALLEL = ("intents.project.requested", "project.spec.ready")
PARALLEL = ("project.resources.allocated", "project.repo.created")
AFTER_PARALLEL = ("project.code.generated", "deploy.succeeded")


# ---------------------------------------------------------------- helpers (shared)


def unique_name(prefix: str) -> str:
    """A project name no other test (or earlier run on the same stack) uses: slugs are names."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def request_project(stack: LocalStackProcess, description: str) -> tuple[str, str]:
    """`orchestrator request`; the project id and flow id it prints."""
    result = stack.cli("request", description)
    assert result.returncode == 0, result.stderr
    project = re.search(r"project ([0-9a-f-]{36})", result.stdout)
    flow = re.search(r"flow\s+([0-9a-f-]{36})", result.stdout)
    assert project and flow, result.stdout
    return project.group(1), flow.group(1)


def wait_for_project(stack: LocalStackProcess, project_id: str, timeout: float = 300
                     ) -> dict[str, Any]:
    """The project's status once it is in a final state (active, failed, awaiting_answer) or
    waits for a person (awaiting_secrets)."""
    return stack.wait_for_state(
        project_id,
        {"active", "failed", "awaiting_answer", "archived", "awaiting_secrets"},
        timeout=timeout,
    )


def chat_messages(state_dir: Path, project_id: str) -> list[dict[str, Any]]:
    """Every notification the console chat showed for the project, oldest first."""
    path = console_chat_path(state_dir)
    if not path.exists():
        return []
    messages = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a line being written right now
        if line["notification"].get("project_id") == project_id:
            messages.append(line)
    return messages


def wait_for_message(state_dir: Path, project_id: str, kind: str, timeout: float = 30
                     ) -> dict[str, Any]:
    """The first chat message of `kind` for the project (the notifier writes it asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in chat_messages(state_dir, project_id)
                 if m["notification"]["kind"] == kind]
        if found:
            return found[0]
        time.sleep(0.3)
    shown = [(m["notification"]["kind"], m["text"][:80]) for m in
             chat_messages(state_dir, project_id)]
    raise AssertionError(f"no {kind} message for {project_id} after {timeout}s; chat: {shown}")


def sql(stack: LocalStackProcess, query: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of one query against the stack's database (what an operator's psql would show)."""
    return stack.query(query, *params)


def get_json(url: str, timeout: float = 5) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 -- our service
        assert response.status == 200
        body: dict[str, Any] = json.loads(response.read())
    return body


def own_port_range(stack: LocalStackProcess, size: int = 100) -> tuple[int, int]:
    """Give the stack's `local` server a block of ports no other stack on this machine uses.

    Every embedded stack registers this machine with the same default range, and services
    outlive their test until the stack stops; a test stack running beside another (or beside a
    developer's) must not hand out a port someone else's service already answers on.
    """
    ((low, high),) = sql(stack, "SELECT port_min, port_max FROM servers WHERE name = 'local'")
    if (low, high) != LOCAL_PORT_RANGE:
        return low, high  # already moved by another module sharing this stack
    # Blocks lie between 22000 and 32000, above the embedded default range (21000-21999) and
    # the deployer tests' service ports; each xdist worker draws from its own share.
    start, end = worker_share(22000, 32000)
    bases = range(start, end - size + 1, size)
    for base in random.sample(bases, k=len(bases)):
        if all(port_is_free(port) for port in range(base, base + size)):
            sql(stack, "UPDATE servers SET port_min = %s, port_max = %s WHERE name = 'local'",
                base, base + size - 1)
            return base, base + size - 1
    raise AssertionError(f"no free block of ports between {start} and {end} on this machine")


def release_dir(stack: LocalStackProcess, slug: str) -> Path:
    """The live release: `<state_dir>/deployments/<slug>/current` (see infra/ansible/README)."""
    return stack.state_dir / "deployments" / slug / "current"


def assert_timeline_in_order(timeline: list[dict[str, Any]]) -> None:
    types = [entry["type"] for entry in timeline]
    expected = {*BEFORE_PARALLEL, *PARALLEL, *AFTER_PARALLEL}
    assert expected <= set(types), types
    position = {kind: types.index(kind) for kind in expected}
    assert position[BEFORE_PARALLEL[0]] < position[BEFORE_PARALLEL[1]], types
    assert max(position[k] for k in BEFORE_PARALLEL) < min(position[k] for k in PARALLEL), types
    assert max(position[k] for k in PARALLEL) < position[AFTER_PARALLEL[0]], types
    assert position[AFTER_PARALLEL[0]] < position[AFTER_PARALLEL[1]], types
    moments = [entry["at"] for entry in timeline]
    assert moments == sorted(moments), timeline


# ---------------------------------------------------------------- one project per kind

KINDS = {
    "http": ("http", "An HTTP API that keeps my notes: add, list and delete notes over REST. "
                     "Name it {name}."),
    "telegram_bot": ("telegram_bot", "A Telegram bot that records my expenses by category and "
                                     "shows a monthly report, called {name}"),
    "worker": ("worker", "A background worker that every hour goes through my tasks and logs a "
                         "summary, named {name}"),
    "russian_bot": ("telegram_bot", "Сделай телеграм-бот для учёта расходов по категориям с "
                                    "отчётом за месяц, под названием {name}"),
}


@pytest.fixture(scope="module")
def submitted(offline_stack: LocalStackProcess) -> dict[str, tuple[str, str, str]]:
    """All four kinds requested at once (they build in parallel): case → (id, flow, name)."""
    own_port_range(offline_stack)
    projects = {}
    for case, (_, template) in KINDS.items():
        name = unique_name(case.replace("_", "-"))
        project_id, flow_id = request_project(offline_stack, template.format(name=name))
        projects[case] = (project_id, flow_id, name)
    return projects


@pytest.mark.parametrize("case", sorted(KINDS))
def test_description_becomes_a_running_service(
    offline_stack: LocalStackProcess, submitted: dict[str, tuple[str, str, str]], case: str
) -> None:
    kind = KINDS[case][0]
    project_id, flow_id, name = submitted[case]
    status = wait_for_project(offline_stack, project_id, timeout=400)
    stored: dict[str, str] = {}
    if kind == "telegram_bot":
        # A bot needs its token: the deploy waits for it and resumes once it is stored.
        assert status["state"] == "awaiting_secrets", status
        stored["TELEGRAM_BOT_TOKEN"] = f"{random.randrange(10**9, 10**10)}:AA{uuid.uuid4().hex}"
        result = offline_stack.cli(
            "secrets", "set", project_id, "TELEGRAM_BOT_TOKEN",
            stdin=stored["TELEGRAM_BOT_TOKEN"],
        )
        assert result.returncode == 0, result.stderr
        # Not `wait_for_project`: it counts awaiting_secrets as settled, which it still is
        # until the deployer takes the stored token up.
        status = offline_stack.wait_for_state(project_id, {"active", "failed"}, timeout=300)
    assert status["state"] == "active", status
    assert status["flow_id"] == flow_id
    assert status["offline"] is True
    assert status["error"] is None, status
    assert status["slug"] == name, status

    ((spec, port, commit),) = sql(
        offline_stack, "SELECT spec, port, code_commit FROM projects WHERE id = %s", project_id
    )
    assert kind in spec["kinds"], spec
    assert spec["language"] == ("ru" if case == "russian_bot" else "en")

    health = get_json(f"{status['url']}/health")
    assert health["status"] == "ok", health
    assert str(status["url"]).endswith(f":{port}")

    env_path = release_dir(offline_stack, name) / ".env"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    env = dotenv_values(env_path)
    variables = {var["name"]: var for var in spec["config"]}
    missing = set(variables) - set(env)
    assert not missing, f"{missing} of the spec are not in {env_path}"
    for var_name, var in variables.items():
        expected = stored.get(var_name, "") if var["secret"] else (var.get("default") or "")
        assert env[var_name] == expected, (var_name, env[var_name])
    assert env["PORT"] == str(port)
    # The service that answers is the one deployed: it reports the pipeline's commit.
    assert health.get("version") == commit, (health, commit)
    assert env["APP_VERSION"] == commit
    assert os.readlink(release_dir(offline_stack, name)).endswith(commit[:12])

    assert_timeline_in_order(status["timeline"])
    done = wait_for_message(offline_stack.state_dir, project_id, "done")
    assert str(status["url"]) in done["text"]
    assert "offline mode" in done["text"]


# ---------------------------------------------------------------- a question first


def test_thin_description_gets_a_question_and_the_answer_resumes_the_flow(
    offline_stack: LocalStackProcess,
) -> None:
    own_port_range(offline_stack)
    project_id, flow_id = request_project(offline_stack, "make me a bot")
    status = wait_for_project(offline_stack, project_id, timeout=60)
    assert status["state"] == "awaiting_answer", status
    question = wait_for_message(offline_stack.state_dir, project_id, "question")
    assert question["notification"]["correlation_id"] == flow_id
    assert "[offline mode]" in question["text"]
    assert "What should the bot do?" in question["text"]

    name = unique_name("reading-list")
    answered = offline_stack.cli(
        "answer", project_id[:8],
        f"it keeps the list of books I read and shows it on /list, called {name}",
    )
    assert answered.returncode == 0, answered.stderr
    assert project_id in answered.stdout

    # Not `wait_for_project`: the project is still awaiting_answer (which that counts as
    # settled) until the coordinator applies the answer, later on a busy machine.
    status = offline_stack.wait_for_state(
        project_id, {"awaiting_secrets", "active", "failed"}, timeout=400
    )
    # A bot's deploy waits for its token; stored, the deploy resumes.
    assert status["state"] == "awaiting_secrets", status
    stored = offline_stack.cli("secrets", "set", project_id, "TELEGRAM_BOT_TOKEN",
                               stdin=f"{random.randrange(10**9, 10**10)}:AA{uuid.uuid4().hex}")
    assert stored.returncode == 0, stored.stderr
    status = offline_stack.wait_for_state(project_id, {"active", "failed"}, timeout=300)
    assert status["state"] == "active", status
    assert status["flow_id"] == flow_id, "the answer must continue the same flow"
    assert status["slug"] == name
    get_json(f"{status['url']}/health")
    ((spec,),) = sql(offline_stack, "SELECT spec FROM projects WHERE id = %s", project_id)
    assert spec["kinds"] == ["telegram_bot"]
    assert [entity["name"] for entity in spec["entities"]] == ["Book"]

    types = [entry["type"] for entry in status["timeline"]]
    assert types.index("project.clarification.asked") < types.index(
        "intents.project.answered"
    ) < types.index("project.spec.ready"), types
    assert_timeline_in_order(status["timeline"])
    # Every message of the conversation belongs to the one flow.
    assert {m["notification"]["correlation_id"]
            for m in chat_messages(offline_stack.state_dir, project_id)} == {flow_id}
