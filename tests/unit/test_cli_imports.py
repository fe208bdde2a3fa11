"""`orchestrator` loads only what the chosen command needs (issue 12: a CLI that answers at once).

Help and argument errors must not load a client library, and a command loads its own module
only: twenty `orchestrator request` started at once should not each pay for the launcher, the
chat or the LLM stack. Each case runs the real CLI in a fresh interpreter and reads the modules
it had loaded when it exited; nothing here is timed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from producers.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]

#: Libraries that cost most of a second to import, which `--help` has no use for.
CLIENT_LIBRARIES = {
    "aiogram",
    "aiohttp",
    "asyncpg",
    "detect_secrets",
    "faststream",
    "httpx",
    "hvac",
    "langchain",
    "langchain_core",
    "langgraph",
    "nats",
    "openai",
    "psycopg",
    "pydantic",
    "rich",
    "sqlalchemy",
    "structlog",
}
LLM_STACK = {"langchain", "langchain_core", "langgraph", "openai"}
UNNEEDED_BY_COMMANDS = LLM_STACK | {"aiogram", "faststream"}
#: The CLI's modules that parse and dispatch; each command's own module loads only once chosen.
CLI_FRONT = {
    "producers.cli.__main__",
    "producers.cli.endpoints",
    "producers.cli.exit_codes",
    "producers.cli.main",
    "producers.cli.parser",
}

#: Runs the CLI as `python -m producers.cli` does, then writes the loaded modules to a file.
PROBE = """
import atexit, json, runpy, sys
modules_file, sys.argv = sys.argv[1], ["orchestrator", *sys.argv[2:]]
atexit.register(lambda: open(modules_file, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("producers.cli", run_name="__main__", alter_sys=True)
"""


def run_cli(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `orchestrator *argv` with an empty state directory and no `ORCH_*` endpoints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_STATE_DIR"] = str(tmp_path / "state")
    modules_file = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(modules_file), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, set(json.loads(modules_file.read_text()))


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".", 1)[0] for name in modules}


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["request", "--help"], 0),
        (["status", "--help"], 0),
        (["status", "my-project", "--follow", "--interval", "0"], 2),
        (["users", "set-budget", "telegram:1", "lots"], 2),
        (["no-such-command"], 2),
    ],
)
def test_help_and_argument_errors_load_no_client_library(
    tmp_path: Path, argv: list[str], code: int
) -> None:
    done, modules = run_cli(tmp_path, *argv)

    assert done.returncode == code, done.stderr
    assert "usage: orchestrator" in done.stdout + done.stderr
    assert top_level(modules) & CLIENT_LIBRARIES == set()
    assert not any(name.startswith("producers.cli.") for name in modules - CLI_FRONT)


def test_request_loads_neither_the_launcher_nor_the_chat_nor_the_llm_stack(
    tmp_path: Path,
) -> None:
    done, modules = run_cli(tmp_path, "request", "a todo list over HTTP")

    assert done.returncode == 1
    assert "orchestrator: no running stack in" in done.stderr
    assert "producers.cli.commands" in modules
    assert top_level(modules) & UNNEEDED_BY_COMMANDS == set()
    assert {"infra.stack.launcher", "producers.console_chat"} & modules == set()


def test_status_reads_the_database_without_the_bus_vault_or_launcher(tmp_path: Path) -> None:
    done, modules = run_cli(tmp_path, "status", "my-project")

    assert done.returncode == 1
    assert "orchestrator: no running stack in" in done.stderr
    assert "producers.cli.status" in modules
    assert top_level(modules) & (UNNEEDED_BY_COMMANDS | {"nats", "hvac", "structlog"}) == set()
    assert {"infra.stack.launcher", "producers.console_chat"} & modules == set()


def test_every_command_names_a_module_that_handles_it() -> None:
    commands = _commands(build_parser())

    assert {"up", "request", "status", "servers", "users", "chat", "change"} <= set(commands)
    for name, module in commands.items():
        assert module is not None, f"`{name}` names no module to run it"
        assert callable(importlib.import_module(module).handle), module


def _commands(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: command.get_default("run") for name, command in sub.choices.items()}
