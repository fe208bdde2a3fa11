"""`orchestrator up`: the local stack in the foreground (`infra.stack.launcher`)."""

from __future__ import annotations

import argparse

from infra.stack.launcher import run_up


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    return run_up(args.state_dir)
