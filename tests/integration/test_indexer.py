"""The indexer on a real nats-server, PostgreSQL and git daemon, with Qdrant's local mode on disk.

Events go in on the bus; what is remembered is read back the way the analyst and the engineer
read it, through `memory.search` (`BusMemorySearch`), so every assertion also crosses the
query path.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from consumers.indexer.app import build_app
from contracts import events as ev
from contracts.envelope import Event
from contracts.spec import ProjectSpec, ServiceKind
from infra.bus.codec import encode
from infra.bus.publisher import JetStreamPublisher
from infra.memory import MemoryHit, MemoryKind, Scope
from infra.memory_client import BusMemorySearch
from infra.memory_search import MemoryUnavailable
from infra.repo_urls import ForgeSettings
from infra.settings import Settings
from infra.stack.git_daemon import GitDaemon
from infra.stack.nats_server import NatsServer
from tests.fakes.openai_server import ScriptedOpenAI

from .conftest import sql, wait_for
from .test_coordinator import sql_exec

ALICE, BOB = "tg:alice", "tg:bob"


def git(*args: str, cwd: Path) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@test.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@test.invalid",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


class Forge:
    """One bare repository on the git daemon and a work tree that commits to it."""

    def __init__(self, daemon: GitDaemon, work: Path) -> None:
        name = f"indexer-{uuid.uuid4().hex[:10]}"
        self.bare = daemon.path_for(name)
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        git(
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            str(self.bare),
            cwd=self.bare.parent,
        )
        self.url = daemon.url_for(name)
        self.work = work
        work.mkdir()
        git("init", "--quiet", "--initial-branch=main", cwd=work)

    def commit(self, files: dict[str, str]) -> str:
        for path in [p for p in self.work.rglob("*") if p.is_file() and ".git" not in p.parts]:
            path.unlink()
        for path, text in files.items():
            (self.work / path).parent.mkdir(parents=True, exist_ok=True)
            (self.work / path).write_text(text)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "-m", "release", cwd=self.work)
        git("push", "--quiet", str(self.bare), "main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


def add_project(db: str, user: str, slug: str, clone_url: str = "") -> uuid.UUID:
    project = uuid.uuid4()
    sql_exec(
        db,
        f"INSERT INTO users (id, display_name, created_at) VALUES ('{user}', '', now()) "
        "ON CONFLICT DO NOTHING",
    )
    url = f"'{clone_url}'" if clone_url else "NULL"
    sql_exec(
        db,
        "INSERT INTO projects (id, flow_id, user_id, description, name, slug, state, version,"
        " answers, offline, attempts, repo_clone_url, created_at, updated_at) VALUES "
        f"('{project}', '{uuid.uuid4()}', '{user}', 'x', '{slug}', '{slug}', 'active', 1,"
        f" '[]', true, '{{}}', {url}, now(), now())",
    )
    return project


def spec(name: str, slug: str, summary: str) -> ProjectSpec:
    return ProjectSpec(name=name, slug=slug, summary=summary, kinds=(ServiceKind.TELEGRAM_BOT,))


def envelope() -> dict[str, object]:
    return {"correlation_id": uuid.uuid4(), "actor": "test"}


@pytest.fixture
async def indexer(
    fresh_nats: NatsServer, migrated_db: str, git_daemon: GitDaemon, tmp_path: Path
) -> AsyncIterator[None]:
    settings = Settings(
        nats={"url": fresh_nats.url},
        database={"url": migrated_db},
        memory={"path": tmp_path / "memory"},
    )
    app = build_app(settings, forge=ForgeSettings(daemon_url=git_daemon.base_url))
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    await wait_for(lambda: app.publisher is not None or serving.done(), 60)
    try:
        yield
    finally:
        stop.set()
        await serving


async def found(
    memory: BusMemorySearch, scope: Scope, text: str, *kinds: MemoryKind
) -> list[MemoryHit]:
    return await memory.search(scope, text, kinds=kinds, limit=20)


async def eventually(
    memory: BusMemorySearch,
    scope: Scope,
    text: str,
    kind: MemoryKind,
    count: int,
    commit: str | None = None,
) -> list[MemoryHit]:
    """Search until `count` hits of `kind` (of `commit`, if given) are there: the consumer
    works asynchronously."""
    hits: list[MemoryHit] = []
    for _ in range(300):
        try:
            hits = await found(memory, scope, text, kind)
        except MemoryUnavailable:
            hits = []
        if len(hits) == count and all(commit in (None, hit.commit) for hit in hits):
            return hits
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} {kind} hits for {text!r}, found {hits}")


async def test_events_become_scoped_memory_and_an_archive_forgets_only_its_project(
    indexer: None, nc: Client, migrated_db: str
) -> None:
    shop = add_project(migrated_db, ALICE, "book-shop")
    blog = add_project(migrated_db, ALICE, "garden-blog")
    weather = add_project(migrated_db, BOB, "weather-bot")
    publisher = JetStreamPublisher.from_client(nc)
    memory = BusMemorySearch(nc)
    for project, slug, summary in (
        (shop, "book-shop", "A book shop bot taking orders"),
        (blog, "garden-blog", "A gardening blog with weekly posts"),
        (weather, "weather-bot", "Telegram bot sending weather forecasts daily"),
    ):
        await publisher.publish(
            ev.SpecReady(
                **envelope(), project_id=project, spec=spec(slug, slug, summary), offline=True
            )
        )
    await publisher.publish(
        ev.SpecRequested(
            **envelope(), project_id=shop, description="x", answers=("deliver orders by courier",)
        )
    )
    failed = ev.DeployFailed(
        **envelope(),
        project_id=shop,
        commit="a" * 40,
        reason="health check timed out",
        rolled_back=True,
    )
    await publisher.publish(failed)

    alice_shop = Scope(ALICE, shop)
    [answer] = await eventually(memory, alice_shop, "courier", MemoryKind.ANSWER, 1)
    assert answer.text == "deliver orders by courier" and answer.project_id == shop
    [outcome] = await eventually(memory, alice_shop, "health check", MemoryKind.OUTCOME, 1)
    assert "previous release restored: health check timed out" in outcome.text
    await eventually(memory, Scope(ALICE), "bot blog", MemoryKind.SPEC, 2)

    # Bob's spec matches every word of this query; Alice's scope still never returns it.
    query = "telegram bot weather forecasts daily"
    alice = await found(memory, Scope(ALICE), query, MemoryKind.SPEC)
    [bobs] = await eventually(memory, Scope(BOB), query, MemoryKind.SPEC, 1)
    assert alice and {hit.project_id for hit in alice} <= {shop, blog}
    assert bobs.project_id == weather and bobs.score > alice[0].score

    # A redelivery after the effect but before the commit (the inbox row lost) rewrites the
    # same point instead of adding one.
    sql_exec(migrated_db, f"DELETE FROM inbox WHERE event_id = '{failed.event_id}'")
    subject, body, headers = encode(failed)
    await nc.jetstream().publish(subject, body, headers={**headers, "Nats-Msg-Id": "again"})
    await wait_for(
        lambda: (
            sql(migrated_db, f"SELECT count(*) FROM inbox WHERE event_id = '{failed.event_id}'")
            == [(1,)]
        ),
        30,
    )
    assert len(await found(memory, alice_shop, "health check", MemoryKind.OUTCOME)) == 1

    # An archive forgets the archived project only.
    sql_exec(migrated_db, f"UPDATE projects SET state = 'archived' WHERE id = '{shop}'")
    await publisher.publish(ev.ProjectArchived(**envelope(), project_id=shop))
    await eventually(memory, alice_shop, "book shop orders courier health", MemoryKind.SPEC, 0)
    assert await found(memory, alice_shop, "book shop orders courier health") == []
    assert [hit.project_id for hit in await found(memory, Scope(ALICE), "gardening blog")] == [blog]
    assert len(await found(memory, Scope(BOB), query)) == 1
    # A late event of the archived project does not bring its memory back.
    late = ev.CodeFailed(**envelope(), project_id=shop, reason="late failure of the shop")
    await publisher.publish(late)
    await wait_for(
        lambda: (
            sql(migrated_db, f"SELECT count(*) FROM inbox WHERE event_id = '{late.event_id}'")
            == [(1,)]
        ),
        30,
    )
    assert await found(memory, alice_shop, "late failure shop") == []


async def test_a_release_replaces_the_previous_commits_code(
    indexer: None, nc: Client, migrated_db: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    forge = Forge(git_daemon, tmp_path / "work")
    project = add_project(migrated_db, ALICE, "cart-api", forge.url)
    other = add_project(migrated_db, ALICE, "other-api", forge.url)
    first = forge.commit({"app/cart.py": "def legacy_checkout(cart):\n    return 0\n"})
    second = forge.commit(
        {"app/cart.py": "def checkout(cart):\n    return cart.total()\n", "README.md": "Cart\n"}
    )
    publisher = JetStreamPublisher.from_client(nc)
    memory = BusMemorySearch(nc)
    scope = Scope(ALICE, project)

    def released(project_id: uuid.UUID, commit: str) -> Event:
        return ev.DeploySucceeded(
            **envelope(),
            project_id=project_id,
            commit=commit,
            release=commit[:12],
            url="http://127.0.0.1:1",
        )

    await publisher.publish(released(project, first))
    await publisher.publish(released(other, first))
    [old] = await eventually(memory, scope, "legacy checkout", MemoryKind.CODE, 1)
    assert (old.path, old.commit, old.start_line, old.end_line) == ("app/cart.py", first, 1, 2)

    await publisher.publish(released(project, second))
    live, readme = await eventually(
        memory, scope, "checkout cart total", MemoryKind.CODE, 2, second
    )
    assert "cart.total()" in live.text and (readme.path, readme.text) == ("README.md", "Cart")
    assert await found(memory, scope, "legacy", MemoryKind.CODE) == []
    # The other project released the first commit and keeps it.
    [kept] = await found(memory, Scope(ALICE, other), "legacy checkout", MemoryKind.CODE)
    assert kept.commit == first
    # Both releases are on the timeline; the one asked about ranks first.
    outcome, _ = await found(memory, scope, f"deployed {second[:12]}", MemoryKind.OUTCOME)
    assert outcome.text.endswith(
        f"deployed {second[:12]}, live at http://127.0.0.1:1 (release {second[:12]})"
    )


async def test_without_an_indexer_a_search_says_memory_is_unavailable(nc: Client) -> None:
    with pytest.raises(MemoryUnavailable, match="no indexer is running"):
        await BusMemorySearch(nc, timeout=1.0).search(Scope(ALICE), "anything")


async def test_with_an_llm_provider_the_indexer_embeds_through_it_with_the_key_from_its_source(
    fresh_nats: NatsServer, migrated_db: str, git_daemon: GitDaemon, tmp_path: Path, nc: Client
) -> None:
    """LLM mode: the indexer process opens a hybrid store, embeds what it stores through the
    provider's `/embeddings` with the key its source gave (Vault in production), and a search
    over the bus finds the text by meaning as well as by words."""
    key = "sk-indexer-" + uuid.uuid4().hex
    with ScriptedOpenAI() as provider:
        settings = Settings(
            nats={"url": fresh_nats.url},
            database={"url": migrated_db},
            memory={"path": tmp_path / "memory"},
            llm={"provider": "openai", "base_url": provider.base_url, "model": "scripted"},
        )

        async def api_key() -> str:
            return key

        app = build_app(
            settings, forge=ForgeSettings(daemon_url=git_daemon.base_url), api_key_source=api_key
        )
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop))
        try:
            await wait_for(lambda: app.publisher is not None or serving.done(), 60)
            shop = add_project(migrated_db, ALICE, "book-shop")
            summary = "A book shop bot taking orders"
            await JetStreamPublisher.from_client(nc).publish(
                ev.SpecReady(
                    **envelope(),
                    project_id=shop,
                    spec=spec("book-shop", "book-shop", summary),
                    offline=True,
                )
            )
            memory = BusMemorySearch(nc)
            [hit] = await eventually(memory, Scope(ALICE), "book shop", MemoryKind.SPEC, 1)
            assert hit.project_id == shop
            assert provider.embedding_requests, "the stored spec was not embedded"
            assert all(
                headers.get("Authorization") == f"Bearer {key}"
                for headers in provider.embedding_headers
            )
            assert key not in hit.text
        finally:
            stop.set()
            await serving
