"""Project memory: specs, answers, outcomes and code, searchable in Qdrant and scoped by owner.

What it is: one Qdrant collection of text points. Each point carries the `user_id` that owns it,
the `project_id` it belongs to, its kind (spec, spec_revision, outcome, answer, code) and, for
code, the path, commit and line range of the chunk. The same code runs on the embedded default
(`QdrantClient(path=...)`, local mode on disk) and on a Qdrant server (`QdrantClient(url=...)`
in docker-compose and Helm); `ORCH_MEMORY__URL` chooses the server.

What it guarantees:
- Isolation. Every search, count and delete is filtered by `_scoped_filter`, which always
  requires the caller's `user_id` (and the `project_id` when one is given). No method reads
  without a `Scope`, so one user's search can never return another user's points, however well
  their text matches. Scores are computed with collection-wide IDF statistics: other users'
  documents shape how rare a word counts, never what is returned.
- Idempotency. A point's id is a uuid5 of its scope, kind, source id and chunk index (and the
  commit for code), so a redelivered event rewrites the same points instead of adding copies.
- Offline search. Vectors are sparse and lexical: words are lowercased (identifiers are also
  split at camelCase and underscores), hashed to 32-bit indices with blake2b (stable across
  processes, unlike `hash()`), weighted with BM25's term-frequency saturation, and Qdrant's
  IDF modifier supplies the inverse document frequency at query time. Checked on qdrant-client
  1.20: local mode applies the modifier (`tests/integration/test_memory.py` pins it). No model
  is downloaded; `MemoryStore.mode` says "lexical".
- Hybrid search with an LLM provider. When the provider is OpenAI-compatible,
  `from_settings` gives the store an embedder (`infra/embeddings.py`: the provider's
  `POST /embeddings`, in batches, each text cut to a bound) and every point also carries a
  named dense vector, `dense` (cosine). `search` then runs both as Query API prefetches under
  the same scoped filter and fuses them with reciprocal rank fusion (`FusionQuery(RRF)`), so a
  query finds what its words say and what they mean; `MemoryStore.mode` says "hybrid". Callers
  call `upsert` and `search` with the same arguments in both modes; only a hit's `score`
  changes scale (BM25 in lexical mode, the fused rank score `sum 1/(k + rank)` in hybrid), so
  order hits by rank, never compare scores across modes. The embedder's errors are
  the bus's: an outage is `EmbeddingUnavailable` (a `TransientError`, retried with backoff), a
  refused key or model `EmbeddingRejected`. The key is in the embedder's header only, never in
  a payload or a log.
- No silent mixing. A collection is made in one mode: a lexical one has no dense vector, and a
  hybrid one holds vectors of one model's size. Opening it in the other mode (a provider was
  configured or removed, the embedding model changed size) raises `MemoryModeMismatch`, which
  says how to recreate it: delete the collection and let the indexer replay its sources
  (`docs/operations.md`, "Project memory").

Who uses it: the `indexer` consumer (`consumers/indexer/`) is the only process that opens the
store. It writes specs, revisions, answers and outcomes from events, and at each released
commit the repository's files (`chunk_tree`), replacing the previous commit's chunks
(`replace_code`), and forgets an archived project (`delete_project`). The analyst and the
engineer read through `infra.memory_search.MemorySearch`, whose bus client
(`infra.memory_client.BusMemorySearch`) asks the indexer over NATS request/reply. That one read
path serves both deployments: local mode serves one process (qdrant-client locks the
directory; a second process gets `MemoryBusyError`), and with a Qdrant server nothing changes.

Qdrant's client is synchronous here. Local mode is not thread-safe, so every call takes the
store's lock; async callers run the methods in a thread (`asyncio.to_thread(store.search, ...)`).
`AsyncQdrantClient` has a local mode too, but it does its work on the event loop, which would
stall heartbeats while a repository is indexed.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from qdrant_client import QdrantClient, models

from infra.embeddings import OpenAIEmbedder
from infra.memory_types import MemoryHit as MemoryHit
from infra.memory_types import MemoryKind as MemoryKind
from infra.memory_types import Scope as Scope
from infra.settings import Settings

LEXICAL_VECTOR = "lexical"
DENSE_VECTOR = "dense"
#: Candidates each prefetch hands to the fusion, per result asked for: enough that a document
#: ranked well by one vector and poorly by the other still reaches the fused list.
_PREFETCH_FACTOR = 4
_PROBE_TEXT = "dimension probe"

# BM25 constants: k1 bounds how much a repeated word adds, b how much a long text is discounted.
# The average length is fixed, since an index that grows point by point has no corpus average:
# 256 tokens, the value Qdrant's own BM25 uses. It only sets where a text starts to count as long.
_BM25_K1 = 1.2
_BM25_B = 0.75
_BM25_AVERAGE_LENGTH = 256.0

# Namespace of point ids; changing it would orphan every stored point.
_POINT_NAMESPACE = uuid.UUID("5d6b1f64-2f0e-4a53-9a43-6b1c1d0f7e21")

_WORD = re.compile(r"[^\W_]+")
_CAMEL_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


class MemoryBusyError(RuntimeError):
    """The local store's directory is held by another process."""


class MemoryModeMismatch(RuntimeError):
    """The collection was made in another mode (lexical vs hybrid, or another vector size)."""


class Embedder(Protocol):
    """Turns texts into dense vectors of one size (`infra.embeddings.OpenAIEmbedder`)."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class CodeChunk:
    """Lines `start_line`..`end_line` (1-based, inclusive) of one file."""

    path: str
    start_line: int
    end_line: int
    text: str
    index: int


@dataclass(frozen=True)
class MemoryDocument:
    """One text to remember. `source_id` names what it came from (an event id, a spec version,
    a file path), so writing the same source again replaces its points."""

    user_id: str
    project_id: uuid.UUID
    kind: MemoryKind
    source_id: str
    text: str
    chunk_index: int = 0
    path: str | None = None
    commit: str | None = None
    start_line: int | None = None
    end_line: int | None = None

    @classmethod
    def from_code(
        cls, user_id: str, project_id: uuid.UUID, commit: str, chunk: CodeChunk
    ) -> MemoryDocument:
        return cls(
            user_id=user_id,
            project_id=project_id,
            kind=MemoryKind.CODE,
            source_id=chunk.path,
            text=chunk.text,
            chunk_index=chunk.index,
            path=chunk.path,
            commit=commit,
            start_line=chunk.start_line,
            end_line=chunk.end_line,
        )

    def point_id(self) -> str:
        key = "\x1f".join(
            (
                self.user_id,
                str(self.project_id),
                self.kind.value,
                self.source_id,
                self.commit or "",
                str(self.chunk_index),
            )
        )
        return str(uuid.uuid5(_POINT_NAMESPACE, key))


def tokenize(text: str) -> list[str]:
    """Lowercased words; an identifier also yields its camelCase and snake_case parts."""
    tokens: list[str] = []
    for word in re.findall(r"\w+", text):
        parts = [part for part in _WORD.findall(word) for part in _camel_parts(part)]
        whole = word.lower().strip("_")
        if whole and (len(parts) != 1 or parts[0] != whole):
            tokens.append(whole)
        tokens.extend(parts)
    return tokens


def _camel_parts(word: str) -> list[str]:
    parts = _CAMEL_PART.findall(word)
    return [part.lower() for part in parts] if parts else [word.lower()]


def _token_index(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big")


def _hashed_counts(tokens: Iterable[str]) -> Counter[int]:
    # Two words hashing to one index add up, as they would in any hashed vocabulary.
    return Counter(_token_index(token) for token in tokens)


def lexical_document_vector(text: str) -> models.SparseVector:
    """BM25 term weights of a stored text (IDF comes from Qdrant's modifier at query time)."""
    tokens = tokenize(text)
    length_norm = _BM25_K1 * (1 - _BM25_B + _BM25_B * len(tokens) / _BM25_AVERAGE_LENGTH)
    counts = _hashed_counts(tokens)
    indices = sorted(counts)
    values = [counts[i] * (_BM25_K1 + 1) / (counts[i] + length_norm) for i in indices]
    return models.SparseVector(indices=indices, values=values)


def lexical_query_vector(text: str) -> models.SparseVector:
    """Each distinct query word once: the modifier weighs it by its IDF."""
    indices = sorted(set(_hashed_counts(tokenize(text))))
    return models.SparseVector(indices=indices, values=[1.0] * len(indices))


def _scoped_filter(scope: Scope, kinds: Sequence[MemoryKind] = ()) -> models.Filter:
    """The filter under every search, count and delete: the user always, the project if given."""
    conditions: list[models.Condition] = [
        models.FieldCondition(key="user_id", match=models.MatchValue(value=scope.user_id))
    ]
    if scope.project_id is not None:
        conditions.append(
            models.FieldCondition(
                key="project_id", match=models.MatchValue(value=str(scope.project_id))
            )
        )
    if kinds:
        conditions.append(
            models.FieldCondition(
                key="kind", match=models.MatchAny(any=[kind.value for kind in kinds])
            )
        )
    return models.Filter(must=conditions)


class MemoryStore:
    """The memory collection, opened on a local path or a Qdrant server."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        local: bool,
        embedder: Embedder | None = None,
    ) -> None:
        self._client = client
        self._collection = collection
        self._local = local
        self._embedder = embedder
        self._lock = threading.Lock()
        self.mode: Literal["lexical", "hybrid"] = "hybrid" if embedder else "lexical"
        #: The size of the collection's dense vectors (hybrid mode), read once at opening.
        self._dense_size: int | None = None
        self._ensure_collection()

    @classmethod
    def open_local(
        cls, path: Path, collection: str = "memory", *, embedder: Embedder | None = None
    ) -> MemoryStore:
        """Local mode on disk. One process at a time: Qdrant locks the directory."""
        path.mkdir(parents=True, exist_ok=True)
        try:
            client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
        except RuntimeError as error:
            raise MemoryBusyError(
                f"memory at {path} is open in another process; local mode serves one process "
                "at a time, so several readers need a Qdrant server (ORCH_MEMORY__URL)"
            ) from error
        try:
            return cls(client, collection, local=True, embedder=embedder)
        except BaseException:
            client.close()  # release the directory's lock for the next attempt
            raise

    @classmethod
    def open_server(
        cls, url: str, collection: str = "memory", *, embedder: Embedder | None = None
    ) -> MemoryStore:
        return cls(QdrantClient(url=url), collection, local=False, embedder=embedder)

    @classmethod
    def from_settings(cls, settings: Settings, api_key: str = "") -> MemoryStore:
        """The store the settings describe; hybrid when the LLM provider is OpenAI-compatible.

        `api_key` is the provider's key, read from Vault by the caller (as for the chat model).
        """
        memory = settings.memory
        embedder = None
        if settings.llm.provider.strip().lower() == "openai":
            embedder = OpenAIEmbedder(
                model=memory.embedding_model, api_key=api_key, base_url=settings.llm.base_url
            )
        if memory.url:
            return cls.open_server(memory.url, memory.collection, embedder=embedder)
        path = memory.path or settings.state_dir / "memory"
        return cls.open_local(path, memory.collection, embedder=embedder)

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ensure_collection(self) -> None:
        with self._lock:
            if self._client.collection_exists(self._collection):
                self._check_mode()
                return
            dense = {}
            if self._embedder is not None:
                (probe,) = self._embedder.embed([_PROBE_TEXT])
                self._dense_size = len(probe)
                dense = {
                    DENSE_VECTOR: models.VectorParams(
                        size=self._dense_size, distance=models.Distance.COSINE
                    )
                }
            self._client.create_collection(
                self._collection,
                vectors_config=dense,
                sparse_vectors_config={
                    LEXICAL_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
            if self._local:
                return  # local mode scans every point; payload indexes would only warn
            # Every read filters by user first: a tenant index keeps each user's points together.
            self._client.create_payload_index(
                self._collection,
                "user_id",
                models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
            )
            for field in ("project_id", "kind"):
                self._client.create_payload_index(
                    self._collection, field, models.PayloadSchemaType.KEYWORD
                )

    def _check_mode(self) -> None:
        """Refuse a collection made in the other mode rather than mix vectors in it."""
        vectors = self._client.get_collection(self._collection).config.params.vectors
        dense = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
        made = "hybrid" if dense is not None else "lexical"
        self._dense_size = dense.size if dense is not None else None
        if made != self.mode:
            raise MemoryModeMismatch(
                f"memory collection {self._collection!r} was made in {made} mode, but this "
                f"process opens it in {self.mode} mode "
                f"({'an OpenAI-compatible' if self.mode == 'hybrid' else 'no'} LLM provider is "
                f"configured). Vectors of the two modes are not mixed: {_RECREATE}"
            )

    def _dense_vectors(self, texts: Sequence[str]) -> list[list[float]] | None:
        if self._embedder is None:
            return None
        vectors = self._embedder.embed(texts)
        if vectors:
            self._check_size(len(vectors[0]))
        return vectors

    def _check_size(self, size: int) -> None:
        if self._dense_size is not None and self._dense_size != size:
            raise MemoryModeMismatch(
                f"memory collection {self._collection!r} holds {self._dense_size}-dimension "
                f"embeddings, but the embedding model now returns {size}; the model changed. "
                f"{_RECREATE}"
            )

    def upsert(self, documents: Iterable[MemoryDocument]) -> int:
        """Write documents (or rewrite them: ids are deterministic). Returns how many."""
        documents = list(documents)
        dense = (
            self._dense_vectors([document.text for document in documents]) if documents else None
        )
        points = [
            models.PointStruct(
                id=document.point_id(),
                vector=_vectors(document.text, dense[index] if dense else None),
                payload={
                    "user_id": document.user_id,
                    "project_id": str(document.project_id),
                    "kind": document.kind.value,
                    "source_id": document.source_id,
                    "text": document.text,
                    "path": document.path,
                    "commit": document.commit,
                    "start_line": document.start_line,
                    "end_line": document.end_line,
                },
            )
            for index, document in enumerate(documents)
        ]
        if points:
            with self._lock:
                self._client.upsert(self._collection, points=points, wait=True)
        return len(points)

    def search(
        self, scope: Scope, text: str, *, kinds: Sequence[MemoryKind] = (), limit: int = 5
    ) -> list[MemoryHit]:
        """The scope's points that best match `text`, best first.

        Lexical mode returns none when no word matches. Hybrid mode fuses the lexical and the
        dense ranking (RRF), both under the same scoped filter, so a paraphrase with no shared
        word still finds its document.
        """
        query = lexical_query_vector(text)
        scoped = _scoped_filter(scope, kinds)
        if self._embedder is None:
            if not query.indices:
                return []
            with self._lock:
                response = self._client.query_points(
                    self._collection,
                    query=query,
                    using=LEXICAL_VECTOR,
                    query_filter=scoped,
                    limit=limit,
                    with_payload=True,
                )
            return [_hit(point) for point in response.points if point.score > 0]
        if not text.strip():
            return []
        dense = self._dense_vectors([text])
        assert dense is not None  # an embedder is set
        candidates = limit * _PREFETCH_FACTOR
        prefetch = [models.Prefetch(query=dense[0], using=DENSE_VECTOR, limit=candidates)]
        if query.indices:
            prefetch.append(models.Prefetch(query=query, using=LEXICAL_VECTOR, limit=candidates))
        with self._lock:
            response = self._client.query_points(
                self._collection,
                prefetch=prefetch,
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                query_filter=scoped,
                limit=limit,
                with_payload=True,
            )
        return [_hit(point) for point in response.points]

    def count(self, scope: Scope, *, kinds: Sequence[MemoryKind] = ()) -> int:
        with self._lock:
            result = self._client.count(
                self._collection, count_filter=_scoped_filter(scope, kinds), exact=True
            )
        return result.count

    def replace_code(
        self, user_id: str, project_id: uuid.UUID, commit: str, chunks: Iterable[CodeChunk]
    ) -> int:
        """Make `commit` the project's only code: write its chunks, then drop every other commit's.

        Written first and dropped second, so a search in between finds old or new code, never
        none. A rerun for the same commit rewrites the same ids. Returns the chunks written.
        """
        written = self.upsert(
            MemoryDocument.from_code(user_id, project_id, commit, chunk) for chunk in chunks
        )
        older = _scoped_filter(Scope(user_id, project_id), (MemoryKind.CODE,))
        older.must_not = [
            models.FieldCondition(key="commit", match=models.MatchValue(value=commit))
        ]
        with self._lock:
            self._client.delete(
                self._collection, points_selector=models.FilterSelector(filter=older), wait=True
            )
        return written

    def delete_project(self, user_id: str, project_id: uuid.UUID) -> None:
        """Forget everything of one project (an archive that purges); other projects stay."""
        selector = models.FilterSelector(filter=_scoped_filter(Scope(user_id, project_id)))
        with self._lock:
            self._client.delete(self._collection, points_selector=selector, wait=True)


_RECREATE = (
    "delete the collection (a Qdrant server: `curl -X DELETE $ORCH_MEMORY__URL/collections/"
    "<name>`; local mode: stop the indexer and remove its directory, `<state dir>/memory` by "
    "default) and let the indexer rebuild it from its sources; see docs/operations.md, "
    '"Project memory"'
)


def _vectors(text: str, dense: list[float] | None) -> dict[str, models.Vector]:
    vectors: dict[str, models.Vector] = {LEXICAL_VECTOR: lexical_document_vector(text)}
    if dense is not None:
        vectors[DENSE_VECTOR] = dense
    return vectors


def _hit(point: models.ScoredPoint) -> MemoryHit:
    payload = point.payload or {}
    return MemoryHit(
        score=point.score,
        project_id=uuid.UUID(payload["project_id"]),
        kind=MemoryKind(payload["kind"]),
        source_id=payload["source_id"],
        text=payload["text"],
        path=payload.get("path"),
        commit=payload.get("commit"),
        start_line=payload.get("start_line"),
        end_line=payload.get("end_line"),
    )


def chunk_file(
    path: str,
    content: bytes,
    *,
    lines_per_chunk: int = 60,
    overlap: int = 10,
    max_bytes: int = 512_000,
) -> list[CodeChunk]:
    """A file's text in overlapping windows of lines; nothing for binary or huge files.

    Overlap keeps a function that straddles a boundary whole in at least one chunk. A file is
    binary when it has a NUL byte or is not UTF-8; huge files (generated, vendored, data) are
    skipped because their chunks would crowd out the code a person wrote.
    """
    if not 0 <= overlap < lines_per_chunk:
        raise ValueError("overlap must be at least 0 and smaller than lines_per_chunk")
    if len(content) > max_bytes or b"\0" in content:
        return []
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return []
    lines = text.splitlines()
    chunks: list[CodeChunk] = []
    step = lines_per_chunk - overlap
    for start in range(0, len(lines), step):
        window = lines[start : start + lines_per_chunk]
        if "".join(window).strip():
            chunks.append(
                CodeChunk(
                    path=path,
                    start_line=start + 1,
                    end_line=start + len(window),
                    text="\n".join(window),
                    index=len(chunks),
                )
            )
        if start + lines_per_chunk >= len(lines):
            break
    return chunks


def chunk_tree(
    root: Path, *, lines_per_chunk: int = 60, overlap: int = 10, max_bytes: int = 512_000
) -> Iterator[CodeChunk]:
    """Chunks of every regular file under a checkout, with paths relative to it (`.git` skipped)."""
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root)
        if ".git" in relative.parts or file.is_symlink() or not file.is_file():
            continue
        if file.stat().st_size > max_bytes:
            continue
        yield from chunk_file(
            relative.as_posix(),
            file.read_bytes(),
            lines_per_chunk=lines_per_chunk,
            overlap=overlap,
            max_bytes=max_bytes,
        )
