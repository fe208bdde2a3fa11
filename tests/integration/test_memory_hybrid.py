"""Hybrid project memory: dense embeddings from an OpenAI-compatible provider beside the lexical
vectors, fused with reciprocal rank fusion, on qdrant-client's local mode.

The provider is `tests/fakes/openai_server.py`, spoken to over real HTTP: its `/embeddings`
vectors are a hashed bag of words in which synonyms share a dimension, so a paraphrase with no
word in common with a document is close to it, as with a real model.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.bus.runtime import PermanentError, TransientError
from infra.embeddings import EmbeddingRejected, EmbeddingUnavailable, OpenAIEmbedder
from infra.memory import (
    DENSE_VECTOR,
    LEXICAL_VECTOR,
    MemoryDocument,
    MemoryKind,
    MemoryModeMismatch,
    MemoryStore,
    Scope,
)
from infra.settings import LLMSettings, MemorySettings, Settings
from tests.fakes.openai_server import EMBEDDING_DIMENSIONS, ScriptedOpenAI

KEY = "sk-embeddings-key-never-logged-0123456789"
ALICE, BOB = "user:alice", "user:bob"
GARAGE, GARDEN, BOB_GARAGE = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)


@pytest.fixture
def provider() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


def hybrid_settings(tmp_path: Path, provider: ScriptedOpenAI) -> Settings:
    return Settings(
        state_dir=tmp_path,
        llm=LLMSettings(provider="openai", base_url=provider.base_url, model="scripted"),
        memory=MemorySettings(embedding_model="scripted-embeddings"),
    )


@pytest.fixture
def hybrid(tmp_path: Path, provider: ScriptedOpenAI) -> Iterator[MemoryStore]:
    with MemoryStore.from_settings(hybrid_settings(tmp_path, provider), KEY) as store:
        yield store


def doc(user: str, project: uuid.UUID, source: str, text: str) -> MemoryDocument:
    return MemoryDocument(
        user_id=user, project_id=project, kind=MemoryKind.SPEC, source_id=source, text=text
    )


SEED = [
    doc(ALICE, GARAGE, "garage", "A Telegram bot that logs the trips of my car"),
    doc(ALICE, GARDEN, "garden", "A blog about gardening with weekly posts"),
    doc(ALICE, GARDEN, "notes", "Notes on watering plants and a calendar of trips to the park"),
    doc(BOB, BOB_GARAGE, "bob", "Automobile fleet tracker: every automobile and its trips"),
]


def test_an_openai_compatible_provider_makes_the_store_hybrid(
    hybrid: MemoryStore, tmp_path: Path
) -> None:
    assert hybrid.mode == "hybrid"
    with MemoryStore.from_settings(Settings(state_dir=tmp_path / "offline")) as offline:
        assert offline.mode == "lexical"


def test_a_paraphrase_with_no_shared_word_finds_its_document(
    hybrid: MemoryStore, tmp_path: Path
) -> None:
    hybrid.upsert(SEED)

    hits = hybrid.search(Scope(ALICE), "automobile journeys")

    assert hits[0].source_id == "garage"
    # Words alone cannot: no document of Alice's has "automobile" or "journeys".
    with MemoryStore.open_local(tmp_path / "lexical") as lexical:
        lexical.upsert(SEED)
        assert lexical.search(Scope(ALICE), "automobile journeys") == []


def test_words_still_count_in_the_fusion(hybrid: MemoryStore) -> None:
    hybrid.upsert(SEED)

    hits = hybrid.search(Scope(ALICE), "watering calendar")

    assert hits[0].source_id == "notes"


def test_a_user_never_sees_another_users_points_in_hybrid_mode(hybrid: MemoryStore) -> None:
    hybrid.upsert(SEED)

    # Bob's document matches "automobile" in both words and meaning; Alice never sees it.
    alice = hybrid.search(Scope(ALICE), "automobile", limit=10)
    assert {hit.source_id for hit in alice} <= {"garage", "garden", "notes"}
    assert all(hit.project_id != BOB_GARAGE for hit in alice)
    only_garden = hybrid.search(Scope(ALICE, GARDEN), "car trips", limit=10)
    assert {hit.project_id for hit in only_garden} == {GARDEN}
    assert [hit.source_id for hit in hybrid.search(Scope(BOB), "car", limit=10)] == ["bob"]


def test_the_key_goes_in_the_bearer_header_and_nowhere_else(
    tmp_path: Path, provider: ScriptedOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with MemoryStore.from_settings(hybrid_settings(tmp_path, provider), KEY) as store:
        store.upsert(SEED)
        store.search(Scope(ALICE), "car")
        points, _ = store._client.scroll(  # the raw points, as a Qdrant dump would show them
            store._collection, limit=100, with_payload=True, with_vectors=True
        )

    assert provider.embedding_headers
    assert {h["Authorization"] for h in provider.embedding_headers} == {f"Bearer {KEY}"}
    assert {r["model"] for r in provider.embedding_requests} == {"scripted-embeddings"}
    assert all(set(point.vector) == {LEXICAL_VECTOR, DENSE_VECTOR} for point in points)  # type: ignore[arg-type]
    assert KEY not in json.dumps([point.payload for point in points])
    assert KEY not in caplog.text
    assert KEY not in repr(store._embedder)


def test_texts_are_embedded_in_bounded_batches(tmp_path: Path, provider: ScriptedOpenAI) -> None:
    embedder = OpenAIEmbedder(
        model="scripted-embeddings",
        api_key=KEY,
        base_url=provider.base_url,
        batch_size=2,
        max_chars=100,
    )
    with MemoryStore.open_local(tmp_path / "memory", embedder=embedder) as store:
        calls_before = len(provider.embedding_requests)
        store.upsert([doc(ALICE, GARAGE, f"d{n}", f"car {n} " + "x" * 500) for n in range(5)])

    batches = [r["input"] for r in provider.embedding_requests[calls_before:]]
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert max(len(text) for batch in batches for text in batch) == 100


def test_a_provider_outage_is_a_transient_error_and_a_refusal_is_not(
    hybrid: MemoryStore, provider: ScriptedOpenAI
) -> None:
    provider.fail_embeddings(503)
    with pytest.raises(EmbeddingUnavailable, match="answered 503") as outage:
        hybrid.upsert(SEED)
    assert isinstance(outage.value, TransientError)
    assert hybrid.count(Scope(ALICE)) == 0  # nothing half-written

    provider.fail_embeddings(401)
    with pytest.raises(EmbeddingRejected, match="401") as refused:
        hybrid.search(Scope(ALICE), "car")
    assert isinstance(refused.value, PermanentError)
    assert KEY not in str(refused.value)

    hybrid.upsert(SEED)  # the provider is back: the retry succeeds
    assert hybrid.count(Scope(ALICE)) == 3


def test_an_unreachable_provider_is_transient(tmp_path: Path) -> None:
    embedder = OpenAIEmbedder(model="m", api_key=KEY, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(EmbeddingUnavailable, match="did not answer"):
        embedder.embed(["car"])


def test_a_collection_made_in_one_mode_is_refused_in_the_other(
    tmp_path: Path, provider: ScriptedOpenAI
) -> None:
    lexical_dir = tmp_path / "lexical"
    with MemoryStore.open_local(lexical_dir) as lexical:
        lexical.upsert(SEED[:1])
    embedder = OpenAIEmbedder(model="m", api_key=KEY, base_url=provider.base_url)
    with pytest.raises(MemoryModeMismatch, match=r"made in lexical mode.*delete the collection"):
        MemoryStore.open_local(lexical_dir, embedder=embedder)

    hybrid_dir = tmp_path / "hybrid"
    with MemoryStore.open_local(hybrid_dir, embedder=embedder) as hybrid:
        hybrid.upsert(SEED[:1])
        info = hybrid._client.get_collection(hybrid._collection)
        assert info.config.params.vectors[DENSE_VECTOR].size == EMBEDDING_DIMENSIONS  # type: ignore[index]
    with pytest.raises(MemoryModeMismatch, match="made in hybrid mode"):
        MemoryStore.open_local(hybrid_dir)
    # The refusal released the directory: the right mode opens it and finds the points.
    with MemoryStore.open_local(hybrid_dir, embedder=embedder) as reopened:
        assert reopened.count(Scope(ALICE)) == 1


def test_an_embedding_model_of_another_size_is_refused(
    hybrid: MemoryStore, provider: ScriptedOpenAI
) -> None:
    hybrid.upsert(SEED[:1])
    provider.embedding_dimensions = EMBEDDING_DIMENSIONS // 2  # the configured model changed

    with pytest.raises(MemoryModeMismatch, match=r"holds 64-dimension embeddings.*returns 32"):
        hybrid.upsert(SEED[1:2])
    assert hybrid.count(Scope(ALICE)) == 1
