"""A server PING that arrives before the handshake's PONG, through a proxy to a real nats-server.

nats-server sends its first PING two seconds after accepting a client that has not finished
the handshake (a bcrypt check queued behind other work). nats-py 2.16 then returns from
`connect` still CONNECTING, and buffers every SUB and PUB of that client forever. The proxy
below makes that happen on demand: it writes a PING to the client right after the client's
CONNECT and PING, before the server's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import nats
import pytest

from infra.bus.connection import connect
from infra.stack.nats_server import NatsServer


class EarlyPingProxy:
    """A TCP proxy to nats-server that answers the first `early` handshakes with a PING first."""

    def __init__(self, upstream: str, early: int) -> None:
        parts = urlsplit(upstream)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 4222
        self.early = early
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    async def __aenter__(self) -> EarlyPingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        inject = self.connections <= self.early
        server_r, server_w = await asyncio.open_connection(self._host, self._port)
        for pipe in (
            self._pipe(client_r, server_w, early_ping_to=client_w if inject else None),
            self._pipe(server_r, client_w),
        ):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early_ping_to: asyncio.StreamWriter | None = None,
    ) -> None:
        seen = b""
        try:
            while data := await reader.read(65536):
                if early_ping_to is not None:
                    seen += data
                    if b"CONNECT " in seen and b"PING\r\n" in seen.split(b"CONNECT ", 1)[1]:
                        early_ping_to.write(b"PING\r\n")
                        await early_ping_to.drain()
                        early_ping_to = None
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@pytest.fixture
async def proxy(nats_server: NatsServer) -> AsyncIterator[EarlyPingProxy]:
    async with EarlyPingProxy(nats_server.url, early=2) as proxy:
        yield proxy


async def test_nats_py_alone_returns_a_client_that_never_finishes_connecting(
    proxy: EarlyPingProxy,
) -> None:
    # The library behaviour the workaround exists for; if a nats-py release fixes it, this
    # fails and `infra.bus.connection` can go back to plain `nats.connect`.
    nc = await nats.connect(proxy.url, connect_timeout=5, allow_reconnect=False)
    try:
        assert not nc.is_connected
        assert nc.is_connecting
    finally:
        await nc.close()


async def test_connect_replaces_an_unfinished_handshake_and_keeps_the_callbacks(
    proxy: EarlyPingProxy,
) -> None:
    closed: list[str] = []

    async def closed_cb() -> None:
        closed.append("closed")

    nc = await connect(proxy.url, connect_timeout=5, closed_cb=closed_cb)
    try:
        # Two handshakes got the early PING and were dropped, without telling the caller.
        assert proxy.connections == 3
        assert nc.is_connected
        assert closed == []
        # And the connection works: a subscription and a publish reach the server.
        sub = await nc.subscribe("handshake.check")
        await nc.publish("handshake.check", b"through")
        message = await sub.next_msg(timeout=10)
        assert message.data == b"through"
    finally:
        await nc.close()
    assert closed == ["closed"]
