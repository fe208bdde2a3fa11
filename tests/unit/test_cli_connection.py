"""The CLI connects again when nats-py returns a connection that never became CONNECTED."""

from __future__ import annotations

from typing import Any

import pytest

from producers.cli import connection


class FakeClient:
    def __init__(self, connected: bool) -> None:
        self.is_connected = connected
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_connection_left_connecting_is_closed_and_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # nats-py 2.16 leaves `connect` CONNECTING when the server's first PING comes before its
    # PONG (a slow password check): PINGs work, but every SUB and PUB stays buffered forever.
    made = [FakeClient(connected=False), FakeClient(connected=True)]
    calls: list[dict[str, Any]] = []

    async def connect(servers: list[str], **options: Any) -> FakeClient:
        calls.append(options)
        return made[len(calls) - 1]

    monkeypatch.setattr(connection.nats, "connect", connect)
    nc = await connection._connect(["nats://127.0.0.1:4222"], {"user": "admin"})
    assert nc is made[1]
    assert made[0].closed
    assert len(calls) == 2 and calls[0]["user"] == "admin"
