"""The LLM provider, chosen by configuration, and the accounting of what each call cost.

The analyst and the engineer get a LangChain chat model from here and nothing else: which
provider answers (any OpenAI-compatible endpoint, or Anthropic) is configuration, and `None`
means offline mode, in which both run their deterministic rules instead.

The API key is passed in by the caller, who read it from Vault at process start. It is handed
to the client object only; it is never logged, and it never reaches a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from infra.settings import LLMSettings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

#: The client retries a failed request this many times (with its own short backoff) before
#: the step fails; longer outages are the bus's job (nak with backoff, then dead letter).
CLIENT_MAX_RETRIES = 2
#: Seconds one provider call may take; a structured spec is a few thousand tokens at most.
REQUEST_TIMEOUT_SECONDS = 120.0

PROVIDERS = ("offline", "openai", "anthropic")


class LLMConfigurationError(ValueError):
    """The LLM settings cannot produce a client (unknown provider, missing key)."""


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one call consumed, as the provider reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


def build_chat_model(settings: LLMSettings, api_key: str) -> BaseChatModel | None:
    """The configured chat model, or None in offline mode.

    `api_key` comes from Vault (`settings.api_key_secret`, key `api_key`). Local
    OpenAI-compatible servers (Ollama, llama.cpp, vLLM) accept any key, so an empty one is
    allowed there only when a `base_url` points at such a server.
    """
    provider = settings.provider.strip().lower()
    if provider == "offline":
        return None
    if provider == "openai":
        if not api_key and not settings.base_url:
            raise LLMConfigurationError(
                "LLM provider 'openai' needs an API key in Vault at "
                f"{settings.api_key_secret!r} (key 'api_key'), or a base_url of a local server"
            )
        # Each provider's client is imported when it is chosen: langchain_anthropic alone costs
        # about 4 s of CPU at start, which offline mode and the other provider never need.
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=settings.model,
            api_key=SecretStr(api_key or "unused-by-local-server"),
            base_url=settings.base_url or None,
            max_retries=CLIENT_MAX_RETRIES,
            timeout=REQUEST_TIMEOUT_SECONDS,
            temperature=0,
            stream_usage=True,
        )
    if provider == "anthropic":
        if not api_key:
            raise LLMConfigurationError(
                "LLM provider 'anthropic' needs an API key in Vault at "
                f"{settings.api_key_secret!r} (key 'api_key')"
            )
        options: dict[str, Any] = {}
        if settings.base_url:
            options["base_url"] = settings.base_url
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(
            model_name=settings.model,
            api_key=SecretStr(api_key),
            max_retries=CLIENT_MAX_RETRIES,
            timeout=REQUEST_TIMEOUT_SECONDS,
            temperature=0,
            stop=None,
            **options,
        )
    raise LLMConfigurationError(
        f"unknown LLM provider {settings.provider!r}; expected one of {', '.join(PROVIDERS)}"
    )


def proxy_base_url(settings: LLMSettings, proxy_url: str) -> str:
    """The base URL a client of `settings.provider` needs to reach the metering proxy.

    OpenAI clients expect the `/v1` prefix in the base URL; the Anthropic client adds
    `/v1/messages` itself.
    """
    root = proxy_url.rstrip("/")
    return root if settings.provider.strip().lower() == "anthropic" else f"{root}/v1"


def usage_from(message: BaseMessage) -> TokenUsage:
    """Token counts of one model response (LangChain's normalised `usage_metadata`).

    Providers that report nothing (some local servers) count as zero rather than failing the
    step: the cost dashboard then shows the gap instead of the pipeline stopping.
    """
    metadata = getattr(message, "usage_metadata", None)
    if metadata:
        return TokenUsage(
            int(metadata.get("input_tokens", 0)), int(metadata.get("output_tokens", 0))
        )
    token_usage = message.response_metadata.get("token_usage") or {}
    return TokenUsage(
        int(token_usage.get("prompt_tokens", 0)), int(token_usage.get("completion_tokens", 0))
    )


def model_name_of(message: BaseMessage, configured: str) -> str:
    """The model that actually answered (providers may resolve aliases), else `configured`."""
    reported = message.response_metadata.get("model_name") or message.response_metadata.get("model")
    return str(reported) if reported else configured


def cost_usd(usage: TokenUsage, settings: LLMSettings) -> float:
    """What `usage` cost at the configured per-1,000-token prices."""
    return round(
        usage.prompt_tokens / 1000 * settings.prompt_cost_per_1k
        + usage.completion_tokens / 1000 * settings.completion_cost_per_1k,
        8,
    )
