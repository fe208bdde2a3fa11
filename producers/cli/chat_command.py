"""`orchestrator chat`: the console chat against the running stack."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from producers.console_chat import run_console_chat

from .commands import as_operator
from .connection import nats_client, publisher
from .endpoints import resolve


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    endpoints = resolve(args.state_dir)

    async def chat() -> int:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        user_id = await as_operator(endpoints, getpass.getuser())
        async with nats_client(endpoints) as nc:
            await run_console_chat(
                publisher(nc),
                endpoints.state_dir,
                reader,
                sys.stdout,
                user_id=user_id,
            )
        return 0

    try:
        return asyncio.run(chat())
    except KeyboardInterrupt:
        return 130
