"""Shared fixtures: real servers on random loopback ports, started once per test session.

Tests are tiered by the infrastructure they need, and the tier is the directory: everything under
`tests/unit` is marked `unit`, under `tests/integration` `integration`, and so on, so
`pytest -m unit` runs without starting a single server (the fixtures below start lazily).
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.bus.runtime import ConsumerApp
from infra.db.migrate import upgrade
from infra.memory import MemoryStore
from infra.stack.git_daemon import GitDaemon
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import (
    BootstrappedOpenBao,
    OpenBaoDev,
    bootstrap_openbao,
    policy_names,
)
from infra.stack.postgres_server import PostgresServer
from infra.stack.sshd_server import Sshd

_TIERS = {
    "unit": "no I/O",
    "integration": "real NATS, PostgreSQL, OpenBao, git, sshd started by the harness",
    "e2e": "the whole pipeline through the local stack",
    "chaos": "processes or servers killed mid-flight",
    "bench": "throughput and latency measurements",
}


def pytest_configure(config: pytest.Config) -> None:
    for tier, description in _TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {description}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection built (every module and test item) out of the cyclic collector.

    A worker's heap is large (the codebase and its libraries), and a full collection walked
    all of it: the automatic ones, the one at each test database's drop (`database_url`) and
    the one at each consumer app's start. Together they cost the two workers about 210 s of
    CPU per suite run. Frozen objects are skipped, so a collection now walks what the tests
    made since. The apps' own freeze is turned off: its thaw at `stop` would undo this one.
    """
    gc.collect()
    gc.freeze()
    ConsumerApp.freeze_startup_objects = False


#: The folders whose files take longest, in the order they run. With several workers (pytest-xdist,
#: `--dist loadfile --no-loadscope-reorder`) each worker takes the next file as it finishes one;
#: a heavy file taken last keeps one worker busy while the others idle (xdist's own order, most
#: tests first, left the three-minute stack-killed test for last).
_HEAVY_FIRST = ("e2e", "integration", "engineer", "deployer", "repo")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent

    def folder(item: pytest.Item) -> str:
        try:
            return item.path.relative_to(tests_dir).parts[0]
        except ValueError:
            return ""

    for item in items:
        tier = folder(item)
        # Per-component folders (tests/deployer, tests/analyst, ...) run against real servers.
        item.add_marker(getattr(pytest.mark, tier if tier in _TIERS else "integration"))
    heavy = {name: rank for rank, name in enumerate(_HEAVY_FIRST)}
    items.sort(key=lambda item: heavy.get(folder(item), len(heavy)))  # stable: file order kept


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session directory holding every server's data and logs."""
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def nats_server(stack_dir: Path) -> Iterator[NatsServer]:
    """A JetStream-enabled nats-server; tests may stop and start it (same port, same data)."""
    with NatsServer(stack_dir / "nats") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL without fsync (throwaway data, faster tests).

    Its directory is outside pytest's temp tree because that tree is private to root (mode
    0700) and the server runs as the postgres user, which must be able to reach its data.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="orchestrator-test-postgres-"))
    try:
        with PostgresServer(data_dir, fsync=False) as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


#: Test databases copied from `migrated_template`, so already at the migrations' head.
_AT_HEAD: set[str] = set()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database per test, owned by the `orchestrator` role; dropped afterwards.

    Empty, unless the test also asks for `migrated_url`: then the same database starts at the
    migrations' head, copied from `migrated_template` (PostgreSQL copies files instead of
    running every migration's DDL again).
    """
    name = f"test_{uuid.uuid4().hex}"
    if "migrated_url" in request.fixturenames:
        template = request.getfixturevalue("migrated_template")
        url = postgres_server.create_database(name, template=template)
        _AT_HEAD.add(url)
    else:
        url = postgres_server.create_database(name)
    yield url
    _AT_HEAD.discard(url)
    # A connection attempt cancelled mid-authentication (a task stopped while its pool was
    # connecting: psycopg's connect generator leaves the socket to the PGconn's finalizer) keeps
    # a backend in "authentication"; DROP DATABASE waits for every backend to absorb its
    # barrier, which one still authenticating does only at `authentication_timeout` (60 s).
    # Collecting the garbage closes such sockets first (cheap: the heap is frozen, above).
    gc.collect()
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def migrated_template(postgres_server: PostgresServer) -> str:
    """A database at the migrations' head, made once per worker for test databases to copy."""
    name = f"template_{uuid.uuid4().hex}"
    upgrade(postgres_server.create_database(name))
    return name


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """The test's database (`database_url`), at the migrations' head.

    A fixture that asks for this one only at run time (`request.getfixturevalue`) gets an
    empty `database_url` (it is not in the test's fixture closure), which is migrated here.
    """
    if database_url not in _AT_HEAD:
        upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
def openbao(stack_dir: Path) -> Iterator[BootstrappedOpenBao]:
    """OpenBao dev server bootstrapped like `orchestrator up` does: one AppRole per process."""
    with OpenBaoDev(stack_dir / "openbao") as server:
        credentials = bootstrap_openbao(server.addr, server.root_token, policy_names())
        yield BootstrappedOpenBao(
            addr=server.addr, root_token=server.root_token, credentials=credentials
        )


@pytest.fixture(scope="session")
def sshd_server(stack_dir: Path) -> Iterator[Sshd]:
    """An sshd accepting only its generated client key, host key pinned by `known_hosts_line`."""
    with Sshd(stack_dir / "sshd") as server:
        yield server


@pytest.fixture(scope="session")
def git_daemon(stack_dir: Path) -> Iterator[GitDaemon]:
    """A git daemon serving bare repositories under its base directory, pushes enabled."""
    with GitDaemon(stack_dir / "git") as server:
        yield server


@pytest.fixture
def memory_store(tmp_path: Path) -> Iterator[MemoryStore]:
    """Project memory on qdrant-client's local mode in a temp dir (the real store, no server)."""
    with MemoryStore.open_local(tmp_path / "memory") as store:
        yield store
