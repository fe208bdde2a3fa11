"""Composition root of the indexer process: the memory store, the event handlers, the search.

The store is opened at startup (`infra.memory.MemoryStore.from_settings`): local mode on disk
under the state directory in the embedded default, a Qdrant server when `ORCH_MEMORY__URL` is
set (compose, Helm). Local mode lets one process hold the directory, so this is the one process
that opens it; the analyst and the engineer search through it over `memory.search`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from infra.bus.runtime import ConsumerApp, StepContext
from infra.git_access import github_token_env
from infra.llm_key import ApiKeySource, vault_api_key_source
from infra.memory import MemoryStore
from infra.memory_search import LocalMemorySearch
from infra.repo_urls import ForgeSettings
from infra.settings import Settings, get_settings
from infra.vault import SecretNotFound, VaultClient

from .handlers import register
from .releases import GitEnvProvider, ReleaseReader, RepositoryUnavailable
from .search_responder import SearchResponder
from .service import IndexerService
from .settings import IndexerSettings


def github_read_env(settings: Settings, token_path: str) -> GitEnvProvider:
    """Git configuration sending the read-only GitHub token, read from Vault at each clone."""

    async def env() -> Mapping[str, str]:
        vault = VaultClient.from_settings(settings.vault)
        await vault.login()
        try:
            token = (await vault.read_secret(token_path)).get("token", "")
        except SecretNotFound:
            token = ""
        if not token:
            raise RepositoryUnavailable(
                f"reading a release from GitHub needs a read-only token in Vault at {token_path} "
                f"(key `token`): `orchestrator secrets set-platform "
                f"{token_path.removeprefix('platform/')} token`"
            )
        return github_token_env(token)

    return env


class _Indexer:
    """The store and the search responder, opened on startup and closed on shutdown."""

    def __init__(
        self,
        app: ConsumerApp,
        releases: ReleaseReader,
        forge: ForgeSettings,
        api_key_source: ApiKeySource,
    ) -> None:
        self._app = app
        self._releases = releases
        self._forge = forge
        self._api_key_source = api_key_source
        self._store: MemoryStore | None = None

    async def start(self) -> None:
        settings = self._app.settings
        # With an OpenAI-compatible provider the store is hybrid and embeds through it.
        api_key = await self._api_key_source() if settings.llm.provider == "openai" else ""
        self._store = await asyncio.to_thread(MemoryStore.from_settings, settings, api_key)
        if self._app.nc is None:
            raise RuntimeError("the indexer starts its search before its NATS connection")
        await SearchResponder(LocalMemorySearch(self._store)).start(self._app.nc)

    async def stop(self) -> None:
        if self._store is not None:
            await asyncio.to_thread(self._store.close)

    def service(self, ctx: StepContext) -> IndexerService:
        if self._store is None:
            raise RuntimeError("the indexer is used before the process started")
        return IndexerService(ctx.session, self._store, self._releases, self._forge)


def build_app(
    settings: Settings | None = None,
    *,
    indexer_settings: IndexerSettings | None = None,
    forge: ForgeSettings | None = None,
    api_key_source: ApiKeySource | None = None,
) -> ConsumerApp:
    """The indexer process; tests pass their settings, forge and LLM key source instead of the
    environment and Vault."""
    settings = settings or get_settings()
    indexer = indexer_settings or IndexerSettings()
    forge = forge or ForgeSettings()
    app = ConsumerApp("indexer", settings=settings)
    git_env = (
        github_read_env(settings, indexer.github_token_path) if forge.host == "github" else None
    )
    releases = ReleaseReader(
        root=indexer.checkout_root, git_env=git_env, timeout=indexer.git_timeout_seconds
    )
    state = _Indexer(app, releases, forge, api_key_source or vault_api_key_source(settings))
    app.on_startup.append(state.start)
    app.on_shutdown.append(state.stop)
    register(app, state.service)
    return app


def main() -> None:
    build_app().run()
