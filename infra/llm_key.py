"""The LLM provider's API key, read from Vault by the processes that call the provider.

The analyst (chat) and the indexer (embeddings) read it with their own AppRole from
`settings.llm.api_key_secret` (key `api_key`) and hand it to the HTTP client only: never to a
prompt, an event, a log line or a stored point. Tests pass their own `ApiKeySource`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from infra.settings import Settings
from infra.vault import SecretNotFound, VaultClient

ApiKeySource = Callable[[], Awaitable[str]]


def vault_api_key_source(settings: Settings) -> ApiKeySource:
    """Reads the LLM provider key from Vault with this process's AppRole."""

    async def read() -> str:
        vault = VaultClient.from_settings(settings.vault)
        await vault.login()
        try:
            secret = await vault.read_secret(settings.llm.api_key_secret)
        except SecretNotFound as exc:
            raise SecretNotFound(
                f"LLM provider {settings.llm.provider!r} is configured but Vault has no key at "
                f"{settings.llm.api_key_secret} (key `api_key`); store it with "
                "`orchestrator secrets set-platform llm api_key`, or set ORCH_LLM__PROVIDER=offline"
            ) from exc
        return secret.get("api_key", "")

    return read
