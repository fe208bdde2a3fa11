"""One proxy per coding run: a fresh token, the key from Vault, the run's ledger.

Both LLM modes of the engineer use it: the container coder on a UNIX socket in a directory it
bind-mounts into the container, the in-process coder on a loopback port. Either way the
model-facing client holds only the token, which is worthless once the run's proxy is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from consumers.engineer.agent_io import SOCKET_NAME
from consumers.engineer.llm_proxy.ledger import Ledger
from consumers.engineer.llm_proxy.server import HostRoute, LLMProxy
from infra.settings import LLMSettings

ApiKeyProvider = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class ProxyRun:
    """A running proxy and what a client needs to use it."""

    proxy: LLMProxy
    token: str
    #: The UNIX socket (container mode) or None.
    socket_path: Path | None = None
    #: `http://127.0.0.1:<port>` (in-process mode) or None.
    base_url: str | None = None


class ProxyLauncher:
    """Starts the metering proxy for one run of one request."""

    def __init__(
        self,
        settings: LLMSettings,
        api_key: ApiKeyProvider,
        *,
        time_limit_seconds: float | None = None,
    ) -> None:
        self._settings = settings
        self._api_key = api_key
        self._time_limit = time_limit_seconds

    @contextlib.asynccontextmanager
    async def on_socket(
        self,
        directory: Path,
        ledger: Ledger,
        host_routes: Mapping[str, HostRoute] | None = None,
    ) -> AsyncIterator[ProxyRun]:
        """A proxy on `directory/llm.sock`, closed (and the socket removed) on exit."""
        path = directory / SOCKET_NAME
        await asyncio.to_thread(_fresh_socket_path, path)
        proxy, token = await self._proxy(ledger, host_routes)
        try:
            await proxy.start_unix(path)
            yield ProxyRun(proxy=proxy, token=token, socket_path=path)
        finally:
            await proxy.close()
            await asyncio.to_thread(path.unlink, missing_ok=True)

    @contextlib.asynccontextmanager
    async def on_loopback(self, ledger: Ledger) -> AsyncIterator[ProxyRun]:
        """A proxy on a random 127.0.0.1 port, closed on exit."""
        proxy, token = await self._proxy(ledger, None)
        try:
            yield ProxyRun(proxy=proxy, token=token, base_url=await proxy.start_tcp())
        finally:
            await proxy.close()

    async def _proxy(
        self, ledger: Ledger, host_routes: Mapping[str, HostRoute] | None
    ) -> tuple[LLMProxy, str]:
        token = secrets.token_urlsafe(32)
        proxy = LLMProxy(
            settings=self._settings,
            api_key=await self._api_key(),
            token=token,
            ledger=ledger,
            time_limit_seconds=self._time_limit,
            host_routes=host_routes,
        )
        return proxy, token


def _fresh_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
