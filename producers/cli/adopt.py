"""`orchestrator adopt <git url>`: deploy an existing repository like any other project.

The command refuses at once a URL the coordinator would refuse (not on this system's git host,
a credential in it) and otherwise prints the new project and how to follow it: the repository
is read, its tests run in the sandbox, the secrets its `.env.example` declares are asked for,
and it is deployed; a repository that cannot run fails with what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from infra.repo_urls import ForgeSettings
from infra.stack.stack_info import read_stack_info
from producers.adoption import BadRepositoryUrl, adopt_request
from producers.cli.commands import HOW_TO_STORE, as_operator
from producers.cli.connection import nats_client, publisher
from producers.cli.endpoints import Endpoints, NoStack, resolve
from producers.credential_scan import CredentialInText

Out = Callable[[str], None]


def forge_for(state_dir: Path) -> ForgeSettings:
    """The git host: `ORCH_REPO_*` when set (a deployed system), else the running local stack's."""
    if "ORCH_REPO_DAEMON_URL" not in os.environ and "ORCH_REPO_HOST" not in os.environ:
        info = read_stack_info(state_dir)
        if info is not None:
            return ForgeSettings(daemon_url=info.git_base_url)
    return ForgeSettings()


async def adopt(
    endpoints: Endpoints, url: str, user: str, out: Out, forge: ForgeSettings | None = None
) -> int:
    event = adopt_request(
        url,
        user_id=await as_operator(endpoints, user),
        source="cli",
        forge=forge or forge_for(endpoints.state_dir),
        how_to_store=HOW_TO_STORE,
    )
    async with nats_client(endpoints) as nc:
        await publisher(nc).publish(event)
    out(f"project {event.project_id}")
    out(f"flow    {event.correlation_id}")
    out(f"adopting {event.repository_url}")
    out(f"follow it with: orchestrator status {event.project_id}")
    return 0


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`: resolve endpoints, run, report errors."""
    try:
        endpoints = resolve(args.state_dir)
        return asyncio.run(adopt(endpoints, args.url, args.user, print))
    except (BadRepositoryUrl, CredentialInText, NoStack) as exc:
        print(f"orchestrator adopt: {exc}", file=sys.stderr)
        return 1
