"""Composition root of the analyst process.

The chat model comes from the LLM settings; its API key is read from Vault once at startup
(`settings.llm.api_key_secret`, key `api_key`) and handed to the client only. With the
provider `offline` nothing is read from Vault and the deterministic analyst runs. The graph's
checkpoints live in the platform's PostgreSQL. Memory (the user's earlier specs and answers) is
searched through the indexer over NATS (`infra.memory_client.BusMemorySearch`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack

from nats.aio.client import Client

from infra.bus.runtime import ConsumerApp
from infra.llm import build_chat_model
from infra.llm_key import ApiKeySource, vault_api_key_source
from infra.memory_client import BusMemorySearch
from infra.settings import Settings, get_settings

from .checkpointer import postgres_checkpointer
from .graph import build_graph
from .handlers import register
from .revision import Reviser
from .revision_handlers import register_revisions
from .service import AnalystService

#: Checkpoint reads and writes per message are few; the bus's own pool does the heavy work.
CHECKPOINT_CONNECTIONS = 5


class _Analyst:
    """The service, built on startup: it needs the Vault key and a checkpointer connection."""

    def __init__(
        self,
        settings: Settings,
        api_key_source: ApiKeySource,
        nats: Callable[[], Client | None],
    ) -> None:
        self._settings = settings
        self._api_key_source = api_key_source
        self._nats = nats
        self._resources = AsyncExitStack()
        self._service: AnalystService | None = None
        self._reviser: Reviser | None = None

    async def start(self) -> None:
        llm_settings = self._settings.llm
        api_key = await self._api_key_source() if llm_settings.provider != "offline" else ""
        model = build_chat_model(llm_settings, api_key)
        saver = await self._resources.enter_async_context(
            postgres_checkpointer(self._settings.database.url, CHECKPOINT_CONNECTIONS)
        )
        # Memory is searched through the indexer over this process's own NATS connection.
        nc = self._nats()
        self._service = AnalystService(
            build_graph(model, saver),
            offline=model is None,
            pricing=llm_settings,
            memory=BusMemorySearch(nc) if nc is not None else None,
        )
        self._reviser = Reviser(model, llm_settings)

    async def stop(self) -> None:
        await self._resources.aclose()

    def service(self) -> AnalystService:
        if self._service is None:
            raise RuntimeError("the analyst is used before the process started")
        return self._service

    def reviser(self) -> Reviser:
        if self._reviser is None:
            raise RuntimeError("the analyst is used before the process started")
        return self._reviser


def build_app(
    settings: Settings | None = None, *, api_key_source: ApiKeySource | None = None
) -> ConsumerApp:
    """The analyst process; tests pass a key source instead of a Vault login."""
    settings = settings or get_settings()
    app = ConsumerApp("analyst", settings=settings)
    analyst = _Analyst(settings, api_key_source or vault_api_key_source(settings), lambda: app.nc)
    app.on_startup.append(analyst.start)
    app.on_shutdown.append(analyst.stop)
    register(app, analyst.service, settings.quotas)
    register_revisions(app, analyst.reviser, settings.quotas)
    return app


def main() -> None:
    build_app().run()
