"""`nats.connect`, returning only a connection that is really established.

nats-py (2.16) sends CONNECT and PING and takes the next line as the answer: if it is not the
PONG, `connect` returns anyway with the client still CONNECTING. nats-server sends a client its
first PING two seconds after accepting it when it has not answered the handshake by then, which
happens when checking the bcrypt password queues behind other work (twenty clients connecting
at once on two busy cores). Such a client answers the server's PINGs, so nothing ever closes it,
but it buffers every SUB and PUB forever: a consumer that fetches nothing, a request that never
gets its acknowledgement. Every process connects through `connect` below, which closes such a
connection and connects again.

The callbacks of a discarded connection are not passed on (the caller's `closed_cb` usually
means "exit for a restart"), except `error_cb`, which only reports.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import structlog
from nats.aio.client import Client

log = structlog.get_logger(__name__)

#: Connections tried before the last one is returned as it is.
CONNECT_ATTEMPTS = 5

_STATE_CALLBACKS = ("closed_cb", "disconnected_cb", "reconnected_cb")

Callback = Callable[[], Awaitable[None]]

#: What to tell when a connection made by `connect` comes back (`on_reconnect`).
_reconnect_listeners: weakref.WeakKeyDictionary[
    Client, list[weakref.WeakMethod[Callable[[], None]]]
] = weakref.WeakKeyDictionary()


def on_reconnect(nc: Client, listener: Callable[[], None]) -> None:
    """Call the bound method `listener` each time `nc` (made by `connect`) reconnects, before
    the connection's own `reconnected_cb`. A server that restarted forgot the requests it held:
    a publisher waiting for an acknowledgement sends again (`JetStreamPublisher.from_client`
    registers). Held weakly: a publisher made per request goes away with its request."""
    listeners = _reconnect_listeners.setdefault(nc, [])
    listeners[:] = [ref for ref in listeners if ref() is not None]
    listeners.append(weakref.WeakMethod(listener))


async def connect(servers: str | list[str], **options: Any) -> Client:
    """`nats.connect(servers, **options)`, connected again while nats-py returns it unfinished.

    The last attempt's connection is returned whatever its state, so a caller never waits
    forever here; the health checks then report it (`is_connected` false).
    """
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        kept = [False]
        gated = {
            name: _forward_if_kept(options[name], kept)
            for name in _STATE_CALLBACKS
            if options.get(name) is not None
        }
        connection: list[Client] = []
        gated["reconnected_cb"] = _tell_listeners(connection, gated.get("reconnected_cb"))
        nc = await nats.connect(servers, **{**options, **gated})
        connection.append(nc)
        if nc.is_connected or attempt == CONNECT_ATTEMPTS:
            kept[0] = True
            return nc
        log.warning("nats.handshake_unfinished", attempt=attempt, servers=str(servers))
        await nc.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _forward_if_kept(callback: Callback, kept: list[bool]) -> Callback:
    async def forward() -> None:
        if kept[0]:
            await callback()

    return forward


def _tell_listeners(connection: list[Client], then: Callback | None) -> Callback:
    async def reconnected() -> None:
        for ref in _reconnect_listeners.get(connection[0], []) if connection else []:
            listener = ref()
            if listener is not None:
                listener()
        if then is not None:
            await then()

    return reconnected
