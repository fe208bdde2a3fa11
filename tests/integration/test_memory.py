"""Project memory on qdrant-client's local mode on disk: isolation, ranking, idempotency, purge."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import models

from infra.memory import (
    LEXICAL_VECTOR,
    MemoryBusyError,
    MemoryDocument,
    MemoryKind,
    MemoryStore,
    Scope,
    chunk_file,
    chunk_tree,
    lexical_query_vector,
    tokenize,
)
from infra.settings import Settings

ALICE, BOB = "user:alice", "user:bob"
SHOP, BLOG = uuid.UUID(int=1), uuid.UUID(int=2)
BOB_SHOP = uuid.UUID(int=3)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MemoryStore]:
    with MemoryStore.open_local(tmp_path / "memory") as opened:
        yield opened


def spec(user: str, project: uuid.UUID, source: str, text: str) -> MemoryDocument:
    return MemoryDocument(
        user_id=user, project_id=project, kind=MemoryKind.SPEC, source_id=source, text=text
    )


def seed(store: MemoryStore) -> None:
    store.upsert(
        [
            spec(
                ALICE,
                SHOP,
                "shop-spec",
                "A book shop with a telegram bot for orders",
            ),
            spec(ALICE, BLOG, "blog-spec", "A blog about gardening with weekly posts"),
            spec(BOB, BOB_SHOP, "bob-spec", "Telegram bot that sends weather forecasts daily"),
        ]
    )


def test_the_store_reports_lexical_mode(store: MemoryStore) -> None:
    assert store.mode == "lexical"


def test_a_user_never_sees_another_users_points_even_when_they_match_better(
    store: MemoryStore,
) -> None:
    seed(store)
    query = "telegram bot weather forecasts daily"

    hits = store.search(Scope(ALICE), query, limit=10)
    bobs = store.search(Scope(BOB), query, limit=10)

    assert [hit.source_id for hit in hits] == ["shop-spec"]
    # Bob's spec matches every word and scores higher, in his own scope: the scope filter,
    # not the text, keeps it out of Alice's results.
    assert [hit.source_id for hit in bobs] == ["bob-spec"]
    assert bobs[0].score > hits[0].score


def test_a_project_scope_returns_only_that_project(store: MemoryStore) -> None:
    seed(store)

    hits = store.search(Scope(ALICE, BLOG), "shop books gardening blog", limit=10)

    assert [hit.source_id for hit in hits] == ["blog-spec"]


def test_a_scope_cannot_be_built_without_a_user() -> None:
    with pytest.raises(ValueError, match="user id"):
        Scope("")


def test_the_relevant_document_ranks_first(store: MemoryStore) -> None:
    store.upsert(
        [
            spec(ALICE, SHOP, "a", "The service stores orders in PostgreSQL and sends emails"),
            spec(ALICE, SHOP, "b", "Payments go through Stripe; refunds are sent by email"),
            spec(ALICE, SHOP, "c", "The service exposes a REST API for orders and users"),
        ]
    )

    hits = store.search(Scope(ALICE), "stripe refunds")

    assert hits[0].source_id == "b"
    assert all(hit.source_id != "a" for hit in hits)


def test_the_idf_modifier_weighs_rare_words_above_common_ones(store: MemoryStore) -> None:
    # "service" is in every document, "kafka" in one: a real IDF lifts the kafka document well
    # above the others, which shows qdrant-client's local mode applies the modifier.
    store.upsert(
        [spec(ALICE, SHOP, f"plain-{n}", f"service number {n}") for n in range(5)]
        + [spec(ALICE, SHOP, "kafka", "service reading kafka")]
    )

    hits = store.search(Scope(ALICE), "service kafka", limit=10)

    assert hits[0].source_id == "kafka"
    assert hits[0].score > 5 * hits[1].score


def test_an_empty_or_unmatched_query_finds_nothing(store: MemoryStore) -> None:
    seed(store)

    assert store.search(Scope(ALICE), "  ,.; ") == []
    assert store.search(Scope(ALICE), "zeppelin") == []


def test_upserting_the_same_document_again_rewrites_its_point(store: MemoryStore) -> None:
    document = spec(ALICE, SHOP, "shop-spec", "An online shop selling books")
    store.upsert([document])
    store.upsert([document])
    store.upsert([spec(ALICE, SHOP, "shop-spec", "An online shop selling vinyl records")])

    assert store.count(Scope(ALICE, SHOP)) == 1
    assert [hit.text for hit in store.search(Scope(ALICE), "vinyl")] == [
        "An online shop selling vinyl records"
    ]


def test_code_points_are_keyed_by_commit_and_chunk(store: MemoryStore) -> None:
    source = "\n".join(f"line {n}" for n in range(1, 121)).encode()
    chunks = chunk_file("app/main.py", source, lines_per_chunk=50, overlap=10)
    documents = [MemoryDocument.from_code(ALICE, SHOP, "c0ffee", chunk) for chunk in chunks]

    store.upsert(documents)
    store.upsert(documents)
    assert store.count(Scope(ALICE, SHOP), kinds=[MemoryKind.CODE]) == len(chunks) == 3

    store.upsert(MemoryDocument.from_code(ALICE, SHOP, "beef", chunk) for chunk in chunks)
    assert store.count(Scope(ALICE, SHOP), kinds=[MemoryKind.CODE]) == 6


def test_search_can_be_limited_to_kinds(store: MemoryStore) -> None:
    store.upsert(
        [
            spec(ALICE, SHOP, "spec", "checkout flow with a cart"),
            MemoryDocument.from_code(
                ALICE,
                SHOP,
                "c0ffee",
                chunk_file("cart.py", b"def checkout(cart):\n    return cart.total()\n")[0],
            ),
        ]
    )

    hits = store.search(Scope(ALICE, SHOP), "checkout cart", kinds=[MemoryKind.CODE])

    assert [(hit.kind, hit.path, hit.commit, hit.start_line, hit.end_line) for hit in hits] == [
        (MemoryKind.CODE, "cart.py", "c0ffee", 1, 2)
    ]


def test_deleting_a_project_removes_only_its_points(store: MemoryStore) -> None:
    seed(store)

    store.delete_project(ALICE, SHOP)

    assert store.count(Scope(ALICE, SHOP)) == 0
    assert store.count(Scope(ALICE, BLOG)) == 1
    assert store.count(Scope(BOB)) == 1
    assert store.search(Scope(ALICE), "online shop books") == []


def test_replacing_code_keeps_only_the_new_commits_chunks(store: MemoryStore) -> None:
    old = chunk_file("shop.py", b"def legacy_checkout(cart):\n    return 0\n")
    new = chunk_file("shop.py", b"def checkout(cart):\n    return cart.total()\n")
    store.replace_code(ALICE, SHOP, "a" * 40, old)
    store.replace_code(ALICE, BLOG, "c" * 40, old)

    assert store.replace_code(ALICE, SHOP, "b" * 40, new) == 1
    store.replace_code(ALICE, SHOP, "b" * 40, new)  # a redelivered release changes nothing

    code = store.search(Scope(ALICE, SHOP), "checkout cart", kinds=[MemoryKind.CODE], limit=10)
    assert [(hit.commit, hit.text) for hit in code] == [("b" * 40, new[0].text)]
    # Another project's code is its own: replacing the shop's left the blog's alone.
    assert store.count(Scope(ALICE, BLOG), kinds=[MemoryKind.CODE]) == 1


def test_deleting_needs_the_owner(store: MemoryStore) -> None:
    seed(store)

    store.delete_project(BOB, SHOP)

    assert store.count(Scope(ALICE, SHOP)) == 1


def test_points_survive_closing_and_reopening_the_path(tmp_path: Path) -> None:
    with MemoryStore.open_local(tmp_path / "memory") as first:
        seed(first)

    with MemoryStore.open_local(tmp_path / "memory") as reopened:
        assert reopened.count(Scope(ALICE)) == 2
        assert [hit.source_id for hit in reopened.search(Scope(ALICE), "gardening")] == [
            "blog-spec"
        ]


def test_a_second_process_on_the_same_path_is_told_to_use_a_server(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # Holds the path until its stdin is closed, however long the check takes.
            "import sys; from qdrant_client import QdrantClient; "
            f"c = QdrantClient(path={str(tmp_path)!r}); print('open', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(MemoryBusyError, match="ORCH_MEMORY__URL"):
            MemoryStore.open_local(tmp_path)
    finally:
        holder.kill()
        holder.wait()


def test_settings_choose_local_mode_under_the_state_dir(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)

    with MemoryStore.from_settings(settings) as opened:
        seed(opened)

    assert (tmp_path / "memory").is_dir()


async def test_async_callers_share_one_store_through_threads(store: MemoryStore) -> None:
    documents = [spec(ALICE, SHOP, f"doc-{n}", f"note {n} about caching") for n in range(20)]

    await asyncio.gather(
        *(asyncio.to_thread(store.upsert, [document]) for document in documents),
        *(asyncio.to_thread(store.search, Scope(ALICE), "caching") for _ in range(10)),
    )

    assert store.count(Scope(ALICE)) == 20


def test_vectors_are_stable_hashed_words() -> None:
    assert tokenize("getUserName parse_http_URL") == [
        "getusername",
        "get",
        "user",
        "name",
        "parse_http_url",
        "parse",
        "http",
        "url",
    ]
    assert tokenize("Привет, мир") == ["привет", "мир"]
    # blake2b, not hash(): the same word has the same index in every process.
    assert lexical_query_vector("cart") == models.SparseVector(indices=[2957705514], values=[1.0])
    assert LEXICAL_VECTOR == "lexical"


def test_chunks_carry_path_and_overlapping_line_ranges() -> None:
    source = "\n".join(f"line {n}" for n in range(1, 131)).encode()

    chunks = chunk_file("src/app.py", source, lines_per_chunk=60, overlap=10)

    assert [(c.path, c.start_line, c.end_line, c.index) for c in chunks] == [
        ("src/app.py", 1, 60, 0),
        ("src/app.py", 51, 110, 1),
        ("src/app.py", 101, 130, 2),
    ]
    assert chunks[1].text.splitlines()[0] == "line 51"
    assert chunks[2].text.splitlines()[-1] == "line 130"


def test_binary_huge_and_blank_files_give_no_chunks() -> None:
    assert chunk_file("logo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR") == []
    assert chunk_file("latin1.txt", "café".encode("latin-1")) == []
    assert chunk_file("data.json", b"x" * 600_000) == []
    assert chunk_file("empty.py", b"") == []
    assert chunk_file("blank.py", b"\n\n   \n") == []


def test_a_checkout_is_chunked_without_git_internals(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("print('hi')\n")
    (tmp_path / "README.md").write_text("# Shop\n\nSells books.\n")
    (tmp_path / "image.bin").write_bytes(b"\0\1\2")
    (tmp_path / "link.py").symlink_to(tmp_path / "src" / "app.py")

    chunks = list(chunk_tree(tmp_path))

    assert [(c.path, c.start_line, c.end_line) for c in chunks] == [
        ("README.md", 1, 3),
        ("src/app.py", 1, 1),
    ]
