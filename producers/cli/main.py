"""`orchestrator`: run the local stack, ask for projects, watch them, operate the bus.

The parser (`producers.cli.parser`) names the module that runs each command, and only that
module is imported, after the arguments are parsed: `--help` and argument errors load no
client library, and twenty `orchestrator request` started at once each load what a request
needs (the bus, the database, Vault), not the launcher, the chat or the LLM stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .endpoints import NoStack
from .parser import build_parser


def dispatch(args: argparse.Namespace) -> int:
    """Import the module that runs the chosen command and hand it the arguments."""
    module = importlib.import_module(args.run)
    code: int = module.handle(args)
    return code


def _reported_errors() -> tuple[type[Exception], ...]:
    """Errors the person can act on, printed as one line instead of a traceback.

    Imported only once a command has failed: their modules load the database and the
    credential detectors, which a command that never reaches them must not pay for.
    """
    from producers.credential_scan import CredentialInText
    from producers.read_model import ProjectNotFound

    return (NoStack, ProjectNotFound, CredentialInText)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = dispatch(args)
    except Exception as exc:
        if not isinstance(exc, _reported_errors()):
            raise
        print(f"orchestrator: {exc}", file=sys.stderr)
        code = 1
    raise SystemExit(code)
