"""Dense embeddings from the configured LLM provider's OpenAI-compatible `POST /embeddings`.

Project memory (`infra/memory.py`) stores one of these beside its lexical vector when an
OpenAI-compatible provider is configured; Anthropic has no embeddings endpoint, and offline
mode has no provider, so both stay lexical. No model weights are ever downloaded here: the
vectors come from the provider over HTTP.

The client speaks the protocol directly with httpx (qdrant-client already depends on it),
rather than through langchain's `OpenAIEmbeddings`, which would import the `openai` SDK and
tiktoken into every process that opens memory. Texts go in batches (`batch_size` per request)
and each is cut to `max_chars`, so one large file cannot exceed the provider's input limit.

The API key is given by the caller, who read it from Vault; it travels only in the
`Authorization` header. Errors name the provider's URL and status, never the key, and a
provider's error text is cut short and cleared of the key before it reaches a message.
A failure worth retrying (network, timeout, 429, 5xx) raises `EmbeddingUnavailable`, a
`TransientError`, so a consumer calling memory naks with backoff instead of dead-lettering;
a refused request (a bad key, an unknown model) raises `EmbeddingRejected`, which retrying
cannot fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from infra.bus.runtime import PermanentError, TransientError

#: Texts per request: providers accept up to 2,048 inputs, but a smaller batch keeps one
#: request's body and its retry cheap.
DEFAULT_BATCH_SIZE = 64
#: Characters kept of each text: ~2,000 tokens, well inside every embedding model's window
#: (OpenAI's take 8,191 tokens); a code chunk is 60 lines, so this rarely cuts anything.
DEFAULT_MAX_CHARS = 8000
DEFAULT_TIMEOUT_SECONDS = 60.0
OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Characters of a provider's error body quoted in an error message.
_ERROR_EXCERPT = 300


class EmbeddingUnavailable(TransientError):
    """The provider did not answer usefully (network, timeout, rate limit, 5xx): retry later."""


class EmbeddingRejected(PermanentError):
    """The provider refused the request (key, model, input): retrying the same call cannot help."""


class OpenAIEmbedder:
    """Embeds texts through an OpenAI-compatible `/embeddings` endpoint (OpenAI, OpenRouter,
    vLLM, Ollama, llama.cpp server)."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_chars: int = DEFAULT_MAX_CHARS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch_size < 1 or max_chars < 1:
            raise ValueError("batch_size and max_chars must be at least 1")
        self.model = model
        self._url = (base_url or OPENAI_BASE_URL).rstrip("/") + "/embeddings"
        self._key = api_key
        self._batch_size = batch_size
        self._max_chars = max_chars
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_seconds, transport=transport)

    def __repr__(self) -> str:  # the key stays out of any log that prints the object
        return f"OpenAIEmbedder(model={self.model!r}, url={self._url!r})"

    def close(self) -> None:
        self._client.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = [
                text[: self._max_chars] or " " for text in texts[start : start + self._batch_size]
            ]
            vectors += self._request(batch)
        return vectors

    def _request(self, batch: list[str]) -> list[list[float]]:
        try:
            response = self._client.post(self._url, json={"model": self.model, "input": batch})
        except httpx.HTTPError as exc:
            raise EmbeddingUnavailable(
                f"embeddings provider at {self._url} did not answer: {type(exc).__name__}"
            ) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise EmbeddingUnavailable(
                f"embeddings provider at {self._url} answered {response.status_code}: "
                f"{self._excerpt(response)}; retry later"
            )
        if response.status_code != 200:
            raise EmbeddingRejected(
                f"embeddings provider at {self._url} refused model {self.model!r} with "
                f"{response.status_code}: {self._excerpt(response)}. Check the key in Vault "
                "(`orchestrator secrets set-platform llm api_key`) and ORCH_MEMORY__EMBEDDING_MODEL"
            )
        return self._vectors(response, len(batch))

    def _vectors(self, response: httpx.Response, expected: int) -> list[list[float]]:
        try:
            items = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [[float(value) for value in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingUnavailable(
                f"embeddings provider at {self._url} sent an answer that is not an embeddings "
                f"list ({type(exc).__name__})"
            ) from None
        if len(vectors) != expected or len({len(v) for v in vectors}) > 1:
            raise EmbeddingUnavailable(
                f"embeddings provider at {self._url} sent {len(vectors)} vectors of mixed or "
                f"wrong count for {expected} texts"
            )
        return vectors

    def _excerpt(self, response: httpx.Response) -> str:
        text = response.text[:_ERROR_EXCERPT]
        return text.replace(self._key, "[key]") if self._key else text
