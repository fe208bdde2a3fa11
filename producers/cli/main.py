"""`orchestrator`: run the local stack, ask for projects, watch them, operate the bus.

The parser (`producers.cli.parser`) names the module that runs each command, and only that
module is imported, after the arguments are parsed: `--help` and argument errors load no
client library, and twenty `orchestrator request` started at once each load what a request
needs (the bus, the database, Vault), not the launcher, the chat or the LLM stack.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .endpoints import NoStack, remote_api
from .exit_codes import ExitCode
from .parser import build_parser


def dispatch(args: argparse.Namespace) -> int:
    """Import the module that runs the chosen command and hand it the arguments.

    In remote mode (`ORCH_REMOTE__URL` and `ORCH_REMOTE__TOKEN`) a command the HTTP API serves
    runs through `producers.cli.remote`; every other command still needs direct access.
    """
    remote = getattr(args, "remote", None)
    module = importlib.import_module(remote if remote and remote_api() else args.run)
    code: int = module.handle(args)
    return code


#: Errors the person can act on, printed as one line instead of a traceback: (module, class).
_REPORTED = (
    ("producers.read_model", "ProjectNotFound"),
    ("producers.credential_scan", "CredentialInText"),
    ("infra.bus.publisher", "PublishNotAcknowledged"),
)


def _reported_errors() -> tuple[type[Exception], ...]:
    """The reportable error classes whose modules are loaded.

    An exception cannot be an instance of a class whose module was never imported, so nothing
    is imported here: a command that failed early does not pay for the database or the bus.
    """
    loaded = [getattr(sys.modules[module], name) for module, name in _REPORTED
              if module in sys.modules]  # fmt: skip
    return (NoStack, *loaded)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = dispatch(args)
    except BrokenPipeError:
        # The reader of our output went away (`orchestrator status X | head -3`): stop quietly
        # like any Unix tool, and keep Python's flush at exit from failing on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = ExitCode.CLOSED_PIPE
    except Exception as exc:
        if not isinstance(exc, _reported_errors()):
            raise
        print(f"orchestrator: {exc}", file=sys.stderr)
        code = 1
    raise SystemExit(code)
