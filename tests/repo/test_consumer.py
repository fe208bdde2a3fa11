"""The repo process end to end: real nats-server, PostgreSQL, git daemon, the real runtime."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
from nats.js.client import JetStreamContext

from consumers.repo.app import build_app
from consumers.repo.github_host import GitHubHost
from consumers.repo.local_forge import LocalForge
from consumers.repo.ports import GitHost
from contracts import events as ev
from contracts.envelope import Event
from contracts.spec import ServiceKind
from infra.bus.codec import decode
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.git_daemon import GitDaemon
from infra.stack.nats_server import NatsServer
from tests.repo.conftest import git, make_spec
from tests.repo.fake_github import FakeGitHub

Outcomes = JetStreamContext.PushSubscription


@asynccontextmanager
async def repo_process(
    tmp_path: Path, database_url: str, host: GitHost
) -> AsyncIterator[tuple[JetStreamPublisher, Outcomes]]:
    """A repo consumer on a nats-server of its own; yields a publisher and the repo outcomes."""
    with NatsServer(tmp_path / "nats") as server:
        settings = Settings(
            nats={"url": server.url},
            database={"url": database_url, "pool_size": 5},
            consumer={"backoff_seconds": [0.2]},
        )
        app = build_app(settings, host=host)
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop))
        nc = await nats.connect(server.url)
        try:
            while app.publisher is None:  # streams exist once the app has started
                await asyncio.sleep(0.05)
            outcomes = await nc.jetstream().subscribe("project.repo.*", ordered_consumer=True)
            yield JetStreamPublisher.from_client(nc), outcomes
        finally:
            stop.set()
            await serving
            await nc.close()


async def next_outcome(outcomes: Outcomes) -> Event:
    """The next RepoCreated or RepoFailed (the requests share the subject prefix)."""
    while True:
        msg = await outcomes.next_msg(timeout=30)
        event = decode(msg.subject, msg.data, msg.headers)
        if not isinstance(event, ev.RepoRequested):
            return event


def requested(kinds: tuple[ServiceKind, ...] = (ServiceKind.HTTP,)) -> ev.RepoRequested:
    return ev.RepoRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=uuid.uuid4(),
        spec=make_spec(*kinds),
    )


async def test_repo_requested_becomes_repo_created_and_a_retry_converges(
    tmp_path: Path, migrated_url: str, git_daemon: GitDaemon
) -> None:
    forge = LocalForge(git_daemon.data_dir, git_daemon.base_url)
    async with repo_process(tmp_path, migrated_url, forge) as (publisher, outcomes):
        request = requested((ServiceKind.TELEGRAM_BOT, ServiceKind.WORKER))
        await publisher.publish(request)
        created = await next_outcome(outcomes)
        assert isinstance(created, ev.RepoCreated)
        assert created.causation_id == request.event_id
        assert created.correlation_id == request.correlation_id
        assert created.clone_url == git_daemon.url_for(request.spec.slug)
        bare = git_daemon.path_for(request.spec.slug)
        assert git("rev-parse", "main", cwd=bare) == created.commit

        # The coordinator asks again (a new message for the same project): same commit.
        await publisher.publish(request.with_id(uuid.uuid4()))
        again = await next_outcome(outcomes)
        assert isinstance(again, ev.RepoCreated)
        assert again.commit == created.commit
        assert git("rev-list", "--count", "main", cwd=bare) == "1"


async def test_a_refusing_host_becomes_repo_failed_with_its_message(
    tmp_path: Path, migrated_url: str, github: FakeGitHub
) -> None:
    async def revoked_token() -> str:
        return "ghp_revoked"

    host = GitHubHost(revoked_token, "acme", owner_is_org=True, api_base_url=github.base_url)
    async with repo_process(tmp_path, migrated_url, host) as (publisher, outcomes):
        request = requested()
        await publisher.publish(request)
        failed = await next_outcome(outcomes)
        assert isinstance(failed, ev.RepoFailed)
        assert failed.project_id == request.project_id
        assert "HTTP 401: Bad credentials" in failed.reason
        assert "ghp_revoked" not in failed.model_dump_json()
