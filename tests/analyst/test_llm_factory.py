"""Provider selection, usage extraction and pricing in `infra.llm`, without I/O."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage
from pydantic import SecretStr

from infra.llm import LLMConfigurationError, TokenUsage, build_chat_model, cost_usd, usage_from
from infra.settings import LLMSettings


def test_offline_has_no_model() -> None:
    assert build_chat_model(LLMSettings(), "") is None


def test_openai_compatible_endpoint() -> None:
    from langchain_openai import ChatOpenAI  # on demand, as the processes import it

    settings = LLMSettings(provider="openai", base_url="http://127.0.0.1:9/v1", model="qwen")
    model = build_chat_model(settings, "sk-abc")
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "qwen"
    assert model.openai_api_base == "http://127.0.0.1:9/v1"
    assert isinstance(model.openai_api_key, SecretStr)
    assert model.openai_api_key.get_secret_value() == "sk-abc"
    assert "sk-abc" not in repr(model)


def test_anthropic() -> None:
    from langchain_anthropic import ChatAnthropic  # on demand: about 1.5 s to import

    model = build_chat_model(LLMSettings(provider="anthropic", model="claude-x"), "ak-123")
    assert isinstance(model, ChatAnthropic)
    assert model.model == "claude-x"
    assert "ak-123" not in repr(model)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (LLMSettings(provider="openai"), "needs an API key in Vault at 'platform/llm'"),
        (LLMSettings(provider="anthropic"), "needs an API key"),
        (LLMSettings(provider="gemini"), "unknown LLM provider 'gemini'"),
    ],
)
def test_misconfiguration_is_explained(settings: LLMSettings, message: str) -> None:
    with pytest.raises(LLMConfigurationError, match=message):
        build_chat_model(settings, "")


def test_usage_and_cost() -> None:
    message = AIMessage(
        content="",
        usage_metadata={"input_tokens": 1500, "output_tokens": 500, "total_tokens": 2000},
    )
    usage = usage_from(message)
    assert usage == TokenUsage(1500, 500)
    settings = LLMSettings(prompt_cost_per_1k=0.002, completion_cost_per_1k=0.01)
    assert cost_usd(usage, settings) == pytest.approx(0.003 + 0.005)
    legacy = AIMessage(
        content="", response_metadata={"token_usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    )
    assert usage_from(legacy) == TokenUsage(3, 4)
    assert usage_from(AIMessage(content="")) == TokenUsage()
