"""Inside the coding container: a loopback TCP port that pipes to the proxy's UNIX socket.

The container has no network, only its own loopback and the bind-mounted proxy socket. The
OpenAI and Anthropic clients speak HTTP over TCP, and only the OpenAI one accepts a custom
transport, so rather than teach each client about UNIX sockets the entry point opens this
byte pipe and points every client at `http://127.0.0.1:<port>`. It carries no logic and no
secret; the proxy on the host checks the token and meters every call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path


@contextlib.asynccontextmanager
async def loopback_to_unix(socket_path: Path) -> AsyncIterator[int]:
    """Listen on 127.0.0.1 (random port) while in the block; yield the port."""

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(
                str(socket_path)
            )
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer)
        )

    server = await asyncio.start_server(connect, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()
