"""The coder's model settings: `ORCH_CODER_LLM__*` replaces only the fields it sets."""

from __future__ import annotations

import pytest

from infra.settings import Settings

ANALYST = {
    "ORCH_LLM__PROVIDER": "openai",
    "ORCH_LLM__BASE_URL": "https://analyst.example/v1",
    "ORCH_LLM__MODEL": "small-model",
    "ORCH_LLM__PROMPT_COST_PER_1K": "0.1",
}


def test_without_coder_settings_the_coder_is_the_analyst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ANALYST.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.coder == settings.llm


def test_one_coder_variable_changes_that_field_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**ANALYST, "ORCH_CODER_LLM__MODEL": "big-model"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.llm.model == "small-model"
    assert settings.coder == settings.llm.model_copy(update={"model": "big-model"})


def test_a_coder_on_another_provider_has_its_own_key_endpoint_and_prices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coder = {
        "ORCH_CODER_LLM__PROVIDER": "anthropic",
        "ORCH_CODER_LLM__MODEL": "claude-model",
        "ORCH_CODER_LLM__PROMPT_COST_PER_1K": "3",
    }
    for name, value in {**ANALYST, **coder}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.coder.provider, settings.coder.model) == ("anthropic", "claude-model")
    assert settings.coder.prompt_cost_per_1k == 3.0
    # The analyst's key never goes to another provider, nor to the analyst's endpoint's URL.
    assert settings.coder.api_key_secret == "platform/llm_coder"
    assert settings.coder.base_url == ""
    assert settings.llm.api_key_secret == "platform/llm"


@pytest.mark.parametrize(
    ("coder", "key_path"),
    [
        ({"ORCH_CODER_LLM__BASE_URL": "https://openrouter.example/v1"}, "platform/llm_coder"),
        (
            {
                "ORCH_CODER_LLM__BASE_URL": "http://127.0.0.1:11434/v1",
                "ORCH_CODER_LLM__API_KEY_SECRET": "platform/llm",
            },
            "platform/llm",
        ),
        ({"ORCH_CODER_LLM__MAX_CODER_ITERATIONS": "3"}, "platform/llm"),
    ],
)
def test_the_analysts_key_goes_to_another_endpoint_only_when_named(
    monkeypatch: pytest.MonkeyPatch, coder: dict[str, str], key_path: str
) -> None:
    for name, value in {**ANALYST, **coder}.items():
        monkeypatch.setenv(name, value)
    assert Settings().coder.api_key_secret == key_path
