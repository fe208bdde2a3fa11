"""`orchestrator`: run the local stack, ask for projects, watch them, operate the bus."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from producers.credential_scan import CredentialInText
from producers.read_model import ProjectNotFound

from . import adopt, changes, chat_command, commands, demo, operations, servers, tokens, users
from .connection import Endpoints, NoStack, resolve


def _default_state_dir() -> Path:
    return Path(os.environ.get("ORCH_STATE_DIR", ".state")).absolute()


def _print(line: str) -> None:
    print(line, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Describe a service in words; get it specified, built, tested and deployed.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=_default_state_dir(),
        help="where the local stack keeps its data (default: $ORCH_STATE_DIR or ./.state)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("up", help="start the embedded stack and every consumer; Ctrl-C stops it")

    p = sub.add_parser("request", help="ask for a new project")
    p.add_argument("description", help="what the service should do, in your own words")
    p.add_argument("--user", default=getpass.getuser(), help="who is asking (default: you)")

    p = sub.add_parser("answer", help="answer the analyst's question about a project")
    p.add_argument("project", help="project id, id prefix or slug")
    p.add_argument("text", help="your answer")
    p.add_argument("--user", default=getpass.getuser())

    p = sub.add_parser("status", help="a project's state and timeline")
    p.add_argument("project", help="project id, id prefix or slug")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("archive", help="retire a project and release its port")
    p.add_argument("project")
    p.add_argument("--reason", default="archived by operator")

    p = sub.add_parser("events", help="the event stream")
    events_sub = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    t = events_sub.add_parser("tail", help="follow events live")
    t.add_argument("--subject", default=">", help="filter, e.g. 'project.>' (default: all)")
    t.add_argument("--all", action="store_true", help="start from the oldest stored event")
    t.add_argument("--no-follow", action="store_true", help="print what is stored, then exit")

    sub.add_parser("lag", help="pending, ack-pending and redelivered counts per durable consumer")

    p = sub.add_parser("dlq", help="the dead-letter queue")
    dlq_sub = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    d = dlq_sub.add_parser("list", help="list dead letters")
    d.add_argument("--consumer", help="only this durable's dead letters")
    for action, text in (("show", "show one dead letter"), ("replay", "re-deliver one")):
        d = dlq_sub.add_parser(action, help=text)
        d.add_argument("seq", type=int, help="sequence number from `dlq list`")

    p = sub.add_parser("secrets", help="project secrets (values go to Vault only)")
    secrets_sub = p.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    s = secrets_sub.add_parser(
        "set", help="store a secret; the whole of stdin is the value (multi-line keys too)"
    )
    s.add_argument("project")
    s.add_argument("name", help="variable name, e.g. TELEGRAM_BOT_TOKEN")
    s = secrets_sub.add_parser(
        "set-platform", help="store a platform secret (LLM key, GitHub, bot, registry token)"
    )
    s.add_argument("name", choices=sorted(commands.PLATFORM_SECRETS))
    s.add_argument("field", help="api_key for llm; token for github and telegram; ...")

    _register_modules(sub)
    return parser


def _register_modules(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Sub-commands that live in their own modules; each sets `handler` on its parser."""
    for module in (servers, tokens, users, chat_command, demo, operations, changes, adopt):
        module.register(sub)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 130
    finally:
        loop.close()


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "up":
        from infra.stack.launcher import run_up

        return run_up(args.state_dir)
    handler = getattr(args, "handler", None)
    if handler is not None:
        result: int = handler(args)
        return result
    endpoints: Endpoints = resolve(args.state_dir)
    if args.command == "request":
        return _run(commands.request(endpoints, args.description, args.user, _print))
    if args.command == "answer":
        return _run(commands.answer(endpoints, args.project, args.text, args.user, _print))
    if args.command == "status":
        return _run(commands.status(endpoints, args.project, args.json, _print))
    if args.command == "archive":
        return _run(commands.archive(endpoints, args.project, args.reason, _print))
    if args.command == "events":
        return _run(
            commands.events_tail(endpoints, args.subject, args.all, not args.no_follow, _print)
        )
    if args.command == "lag":
        return _run(commands.lag(endpoints, _print))
    if args.command == "dlq":
        seq = getattr(args, "seq", None)
        consumer = getattr(args, "consumer", None)
        return _run(commands.dlq(endpoints, args.dlq_command, seq, consumer, _print))
    if args.command == "secrets" and args.secrets_command == "set-platform":
        return _run(
            commands.platform_secret_set(endpoints, args.name, args.field, sys.stdin, _print)
        )
    if args.command == "secrets":
        return _run(commands.secret_set(endpoints, args.project, args.name, sys.stdin, _print))
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = dispatch(args)
    except (NoStack, ProjectNotFound, CredentialInText) as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        code = 1
    raise SystemExit(code)
