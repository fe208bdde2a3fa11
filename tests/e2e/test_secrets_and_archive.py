"""A bot waits for its token, goes live when it is stored, and archive removes it: real stack.

A Telegram bot cannot work without `TELEGRAM_BOT_TOKEN`, so its first deploy does not fail: the
project waits in `awaiting_secrets`, and the chat message and `orchestrator status` say which
secret and how to store it. `orchestrator secrets set` (the value on stdin) stores it, and the
deploy resumes by itself. The token then exists in the service's `.env` and nowhere else the
platform writes: not in the database, not in any stream message, not in any log or state file.

Archiving the live project stops its service, removes its releases and its system user,
deletes its secrets from Vault and frees its port, which the next project can take; the
repository and the timeline stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from nats.js.errors import NotFoundError

from contracts.topology import STREAMS
from infra.vault import VaultClient

from .conftest import LocalStackProcess, admin_nats, processes_mentioning
from .test_pipeline_offline import (
    chat_messages,
    get_json,
    own_port_range,
    release_dir,
    request_project,
    sql,
    unique_name,
    wait_for_message,
)

TOKEN_NAME = "TELEGRAM_BOT_TOKEN"


def wait_until(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.5)


def database_text(stack: LocalStackProcess) -> str:
    """Every row of every table, as text (bytea as hex): what a database dump would hold."""
    tables = sql(
        stack,
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    return "\n".join(
        str(row[0]) for (table,) in tables for row in sql(stack, f'SELECT t::text FROM "{table}" t')
    )


def stream_bytes(stack: LocalStackProcess) -> bytes:
    """Every message (headers and data) still stored in every stream, read as the operator."""
    assert stack.info is not None
    info = stack.info

    async def read() -> bytes:
        nc = await admin_nats(info)
        try:
            js = nc.jetstream()
            found = bytearray()
            for spec in STREAMS:
                state = (await js.stream_info(spec.name)).state
                if not state.messages:
                    continue  # an empty stream has no sequence number to ask for
                for seq in range(state.first_seq, state.last_seq + 1):
                    with contextlib.suppress(NotFoundError):  # a deleted sequence number
                        msg = await js.get_msg(spec.name, seq)
                        found += msg.data or b""
                        found += repr(msg.headers).encode()
            return bytes(found)
        finally:
            await nc.close()

    return asyncio.run(read())


def files_mentioning(root: Path, needles: list[bytes], skip: Path) -> list[Path]:
    """Files under `root` (not following links, not under `skip`) holding any needle."""
    hits = []
    for path in root.rglob("*"):
        if skip in path.parents or path == skip or path.is_symlink() or not path.is_file():
            continue
        try:
            blob = path.read_bytes()
        except OSError:
            continue
        if any(needle in blob for needle in needles):
            hits.append(path)
    return hits


@pytest.fixture(scope="module")
def bot(offline_stack: LocalStackProcess) -> dict[str, str]:
    own_port_range(offline_stack)
    name = unique_name("token-bot")
    project_id, flow_id = request_project(
        offline_stack, f"A Telegram bot that records my expenses by category, called {name}"
    )
    return {"id": project_id, "flow": flow_id, "slug": name}


# A whole pipeline and a deploy on a shared machine: slow under load, not stuck.
@pytest.mark.timeout(1800)
def test_a_bot_waits_for_its_token_and_goes_live_when_it_is_stored(
    offline_stack: LocalStackProcess, bot: dict[str, str]
) -> None:
    stack, project_id, slug = offline_stack, bot["id"], bot["slug"]
    status = stack.wait_for_state(project_id, {"awaiting_secrets", "active", "failed"}, 600)
    assert status["state"] == "awaiting_secrets", status
    assert status["missing_secrets"] == [TOKEN_NAME]
    assert status["error"] is None
    summaries = [entry["summary"] for entry in status["timeline"]]  # type: ignore[attr-defined]
    assert f"deploy waits for secrets: {TOKEN_NAME}" in summaries
    assert not release_dir(stack, slug).exists()
    human = stack.cli("status", project_id)
    assert f"orchestrator secrets set {slug} {TOKEN_NAME}" in human.stdout, human.stdout
    wait_until(
        lambda: any(
            "before it can go live" in m["text"] for m in chat_messages(stack.state_dir, project_id)
        ),
        "the chat message naming the missing secret",
    )
    asked = next(
        m
        for m in chat_messages(stack.state_dir, project_id)
        if "before it can go live" in m["text"]
    )
    assert TOKEN_NAME in asked["text"]
    assert f"/secret {TOKEN_NAME} {slug}" in asked["text"]
    assert f"orchestrator secrets set {slug} {TOKEN_NAME}" in asked["text"]
    assert asked["notification"]["correlation_id"] == bot["flow"]

    # aiogram checks the token's shape; the service then polls in the background and its
    # /health answers whether or not Telegram is reachable from here.
    token = f"{secrets.randbelow(10**9) + 10**9}:AA{secrets.token_hex(16)}"
    stored = stack.cli("secrets", "set", project_id, TOKEN_NAME, stdin=token)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert token not in stored.stdout + stored.stderr

    status = stack.wait_for_state(project_id, {"active", "failed"}, 900)
    assert status["state"] == "active", status
    assert status["missing_secrets"] == []
    assert get_json(f"{status['url']}/health")["status"] == "ok"
    env_path = release_dir(stack, slug) / ".env"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    assert dotenv_values(env_path)[TOKEN_NAME] == token
    types = [entry["type"] for entry in status["timeline"]]  # type: ignore[attr-defined]
    assert types.index("deploy.awaiting_secrets") < types.index("project.secret.stored")
    assert types.index("project.secret.stored") < types.index("deploy.succeeded")
    wait_for_message(stack.state_dir, project_id, "done")

    # Nowhere else: not the database, not a stream, not a log or any other file of the stack.
    needles = [token.encode(), token.encode().hex().encode()]
    assert token not in database_text(stack)
    assert token.encode().hex() not in database_text(stack)
    assert token.encode() not in stream_bytes(stack)
    assert token not in "".join(stack.output)
    assert stack.info is not None
    leaks = files_mentioning(stack.state_dir, needles, skip=stack.state_dir / "deployments")
    assert leaks == [], leaks


# An archive and a second project's whole pipeline on a shared machine: slow, not stuck.
@pytest.mark.timeout(1800)
def test_archive_removes_the_service_its_releases_and_secrets_and_frees_the_port(
    offline_stack: LocalStackProcess, bot: dict[str, str]
) -> None:
    stack, project_id, slug = offline_stack, bot["id"], bot["slug"]
    status = stack.wait_for_state(project_id, {"active", "failed"}, 600)
    assert status["state"] == "active", status
    ((port, clone_url),) = sql(
        stack, "SELECT port, repo_clone_url FROM projects WHERE id = %s", project_id
    )
    project_root = (stack.state_dir / "deployments").resolve() / slug
    assert processes_mentioning(str(project_root)), "the live service runs from its release"
    assert stack.info is not None
    vault = VaultClient(stack.info.vault_addr, token=stack.info.vault_token)
    assert asyncio.run(vault.list_secrets(f"projects/{project_id}")) == [TOKEN_NAME]
    timeline_before = len(status["timeline"])  # type: ignore[arg-type]

    archived = stack.cli("archive", project_id)
    assert archived.returncode == 0, archived.stderr
    wait_until(
        lambda: sql(
            stack,
            "SELECT 1 FROM project_events WHERE project_id = %s AND event_type = 'deploy.stopped'",
            project_id,
        ),
        "the deployer reports the service stopped",
        timeout=120,
    )
    wait_until(
        lambda: not sql(stack, "SELECT 1 FROM port_allocations WHERE project_id = %s", project_id),
        "the port is released",
    )

    assert processes_mentioning(str(project_root)) == []
    assert not project_root.exists()  # every release, its .env and logs
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert asyncio.run(vault.list_secrets(f"projects/{project_id}")) == []
    # The repository and the timeline stay.
    remote = subprocess.run(
        ["git", "ls-remote", clone_url], capture_output=True, text=True, check=False, timeout=30
    )
    assert remote.returncode == 0 and "refs/heads/" in remote.stdout, remote.stderr
    status = stack.status(project_id)
    assert status["state"] == "archived"
    timeline = status["timeline"]
    assert len(timeline) > timeline_before  # type: ignore[arg-type]
    stopped = next(e for e in timeline if e["type"] == "deploy.stopped")  # type: ignore[attr-defined]
    assert f"secrets deleted from Vault: {TOKEN_NAME}" in stopped["summary"]

    # The next project can take the port: it is the only one the server offers now.
    ((low, high),) = sql(stack, "SELECT port_min, port_max FROM servers WHERE name = 'local'")
    sql(stack, "UPDATE servers SET port_min = %s, port_max = %s WHERE name = 'local'", port, port)
    try:
        name = unique_name("next-on-port")
        next_id, _ = request_project(
            stack, f"An HTTP API that keeps my notes: add, list and delete notes. Name it {name}."
        )
        status = stack.wait_for_state(next_id, {"active", "failed"}, 900)
        assert status["state"] == "active", status
        assert str(status["url"]).endswith(f":{port}")
        assert get_json(f"{status['url']}/health")["status"] == "ok"
    finally:
        sql(
            stack, "UPDATE servers SET port_min = %s, port_max = %s WHERE name = 'local'", low, high
        )
