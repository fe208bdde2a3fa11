"""`orchestrator demo`: one command from a description to a running service on this machine.

It starts the local stack (unless one already runs in the state directory), submits a sample
description, prints every progress message as the pipeline reports it, and ends with the URL
of the freshly deployed service once its health check answers. Without an LLM configured it
runs in offline mode and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from infra.console_chat_file import ConsoleChatLine, console_chat_path
from infra.stack.stack_info import StackInfo, read_stack_info
from producers.read_model import ProjectNotFound, ProjectView, project_view

from . import commands
from .database import database
from .endpoints import Endpoints

FINAL_STATES = {"active", "failed", "awaiting_answer", "archived", "awaiting_secrets"}


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    state_dir: Path = args.state_dir.resolve()
    started = time.monotonic()
    stack_process: subprocess.Popen[bytes] | None = None
    info = read_stack_info(state_dir)
    if info is None:
        print(f"starting the local stack in {state_dir} …", flush=True)
        stack_process = _start_stack(state_dir)
        info = _wait_for_stack(state_dir, stack_process, timeout=180)
        if info is None:
            print(
                "orchestrator demo: the stack did not come up; see "
                f"{state_dir / 'logs'} and the output above",
                file=sys.stderr,
            )
            _stop_stack(stack_process)
            return 1
        print(f"stack ready in {time.monotonic() - started:.1f}s", flush=True)
    endpoints = Endpoints(
        info.nats_url, info.database_url, info.vault_addr, info.vault_token, state_dir
    )
    try:
        code = asyncio.run(_run_demo(endpoints, args.description, args.timeout, started))
        if code == 0 and args.keep_running and stack_process is not None:
            print("the stack keeps running; Ctrl-C stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                stack_process.wait()
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        if stack_process is not None:
            _stop_stack(stack_process)


def _start_stack(state_dir: Path) -> subprocess.Popen[bytes]:
    log = state_dir / "up.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "--state-dir", str(state_dir), "up"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )


def _wait_for_stack(
    state_dir: Path, process: subprocess.Popen[bytes], timeout: float
) -> StackInfo | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (state_dir / "up.log").read_text(errors="replace")[-2000:]
            print(tail, file=sys.stderr)
            return None
        info = read_stack_info(state_dir)
        if info is not None and "stop with Ctrl-C" in (state_dir / "up.log").read_text(
            errors="replace"
        ):
            return info
        time.sleep(0.2)
    return None


def _stop_stack(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _run_demo(
    endpoints: Endpoints, description: str, wait_seconds: float, started: float
) -> int:
    chat_file = console_chat_path(endpoints.state_dir)
    offset = chat_file.stat().st_size if chat_file.exists() else 0
    lines: list[str] = []
    await commands.request(endpoints, description, "demo", lines.append)
    project_id = lines[0].split()[-1]
    print(f"project {project_id} submitted: {description}", flush=True)
    deadline = time.monotonic() + wait_seconds
    state = "requested"
    view: ProjectView | None = None
    async with database(endpoints) as sessions:
        while time.monotonic() < deadline:
            offset = _print_new_messages(chat_file, offset, project_id)
            try:
                async with sessions() as session:
                    view = await project_view(session, project_id)
            except ProjectNotFound:  # the coordinator has not created it yet
                await asyncio.sleep(0.2)
                continue
            state = view.state
            if state in FINAL_STATES:
                break
            await asyncio.sleep(0.5)
        _print_new_messages(chat_file, offset, project_id)
    if state == "awaiting_answer":
        print(
            f'the analyst needs an answer: orchestrator answer {project_id} "..."', file=sys.stderr
        )
        return 2
    if view is not None and state == "awaiting_secrets":
        for name in view.missing_secrets:
            print(
                f'the deploy waits for {name}: printf %s "$VALUE" | '
                f"orchestrator secrets set {project_id} {name}",
                file=sys.stderr,
            )
        return 2
    if view is None or state != "active" or not view.url:
        reason = (view.error if view else None) or f"still {state} after {wait_seconds:.0f}s"
        print(f"orchestrator demo: the project did not go live: {reason}", file=sys.stderr)
        print(f"timeline: orchestrator status {project_id}", file=sys.stderr)
        return 1
    health = _health(view.url)
    if health is None:
        print(f"orchestrator demo: {view.url} does not answer its health check", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print(f"health: {health}", flush=True)
    print(f"done in {elapsed:.1f}s" + ("  [offline mode]" if view.offline else ""), flush=True)
    print(view.url, flush=True)
    return 0


def _print_new_messages(chat_file: Path, offset: int, project_id: str) -> int:
    if not chat_file.exists():
        return offset
    with chat_file.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]
    for raw in complete.splitlines():
        try:
            line = ConsoleChatLine.model_validate_json(raw)
        except ValueError:
            continue
        if str(line.notification.project_id) == project_id:
            print(f"  » {line.text}", flush=True)
    return offset + len(complete)


def _health(url: str) -> str | None:
    try:
        # The URL is the deployer's own http:// report, not user input.
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as response:  # noqa: S310
            body: str = response.read().decode()
    except OSError:
        return None
    try:
        return json.dumps(json.loads(body))
    except ValueError:
        return body[:200]
