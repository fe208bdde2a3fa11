"""Allocation against a real PostgreSQL: placement, uniqueness under concurrency, convergence."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.provisioner.service import Allocation, NoCapacityError, ProvisionerService
from infra.db.models import PortAllocation, ServerState
from tests.provisioner.conftest import AddServer


async def allocate(
    sessionmaker: async_sessionmaker[AsyncSession],
    project_id: uuid.UUID | None = None,
    labels: tuple[str, ...] = (),
) -> Allocation:
    async with sessionmaker.begin() as session:
        return await ProvisionerService(session).allocate(project_id or uuid.uuid4(), labels)


async def test_picks_the_least_loaded_server_relative_to_capacity(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("small", capacity=2)
    await add_server("large", capacity=10)
    names = [(await allocate(sessionmaker)).server_name for _ in range(6)]
    # Both start at 0 and "large" wins the tie by name; then small (0/2) is emptier, and
    # afterwards large stays below small's 1/2 for the remaining four.
    assert names.count("small") == 1
    assert names.count("large") == 5


async def test_only_servers_with_every_label_qualify(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("plain", capacity=50)
    await add_server("gpu-eu", labels=["gpu", "eu"], capacity=1)
    allocation = await allocate(sessionmaker, labels=("gpu",))
    assert allocation.server_name == "gpu-eu"
    assert allocation.port == 20000


@pytest.mark.parametrize("state", [s for s in ServerState if s is not ServerState.READY])
async def test_only_ready_servers_are_chosen(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer, state: ServerState
) -> None:
    await add_server("elsewhere", state=state)
    with pytest.raises(NoCapacityError) as caught:
        await allocate(sessionmaker)
    message = str(caught.value)
    assert "is ready" in message
    if state is ServerState.RETIRED:
        assert "elsewhere" not in message
    else:
        assert f"elsewhere is {state}" in message
        assert "orchestrator servers bootstrap NAME" in message
    await add_server("fresh")
    assert (await allocate(sessionmaker)).server_name == "fresh"


async def test_host_is_the_public_address_when_one_is_set(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("edge", public_host="edge.example.com")
    allocation = await allocate(sessionmaker)
    assert allocation == Allocation("edge", "edge.example.com", 20000)


async def test_no_capacity_names_the_labels_and_the_fix(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("tiny", labels=["gpu"], capacity=1)
    await allocate(sessionmaker, labels=("gpu",))
    with pytest.raises(NoCapacityError) as caught:
        await allocate(sessionmaker, labels=("gpu", "eu"))
    message = str(caught.value)
    assert "no server with free capacity and labels [gpu, eu]" in message
    assert "orchestrator servers add" in message
    assert "--labels gpu,eu" in message
    with pytest.raises(NoCapacityError, match=r"labels \[gpu\]"):
        await allocate(sessionmaker, labels=("gpu",))


async def test_a_redelivered_request_gets_the_same_allocation(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("one")
    project_id = uuid.uuid4()
    first = await allocate(sessionmaker, project_id)
    second = await allocate(sessionmaker, project_id)
    assert first == second
    async with sessionmaker() as session:
        count = await session.scalar(select(func.count(PortAllocation.id)))
    assert count == 1


async def test_concurrent_deliveries_of_one_request_converge(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("a")
    await add_server("b")
    project_id = uuid.uuid4()
    results = await asyncio.gather(*(allocate(sessionmaker, project_id) for _ in range(8)))
    assert len(set(results)) == 1


async def test_fifty_concurrent_allocations_get_distinct_ports_and_respect_capacity(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("a", capacity=30, ports=(21000, 21099))
    await add_server("b", capacity=30, ports=(21000, 21099))
    projects = [uuid.uuid4() for _ in range(50)]
    results = await asyncio.gather(*(allocate(sessionmaker, p) for p in projects))
    pairs = {(r.server_name, r.port) for r in results}
    assert len(pairs) == 50
    per_server = {name: [r.port for r in results if r.server_name == name] for name in "ab"}
    assert all(len(ports) <= 30 for ports in per_server.values())
    # Lowest-first: every server's ports are a contiguous block from the bottom of its range.
    for ports in per_server.values():
        assert sorted(ports) == list(range(21000, 21000 + len(ports)))
    async with sessionmaker() as session:
        stored = (await session.execute(select(PortAllocation.project_id))).scalars().all()
    assert sorted(stored) == sorted(projects)


async def test_concurrent_allocations_beyond_capacity_fail_cleanly(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("a", capacity=5)
    await add_server("b", capacity=5)
    results = await asyncio.gather(
        *(allocate(sessionmaker) for _ in range(14)), return_exceptions=True
    )
    allocated = [r for r in results if isinstance(r, Allocation)]
    refused = [r for r in results if not isinstance(r, Allocation)]
    assert len(allocated) == 10
    assert len({(r.server_name, r.port) for r in allocated}) == 10
    assert all(isinstance(r, NoCapacityError) for r in refused)


async def test_release_frees_the_port_for_the_next_project(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    await add_server("one", capacity=3)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert (await allocate(sessionmaker, first)).port == 20000
    assert (await allocate(sessionmaker, second)).port == 20001
    async with sessionmaker.begin() as session:
        released = await ProvisionerService(session).release(first)
    assert released == Allocation("one", "one.internal", 20000)
    assert (await allocate(sessionmaker)).port == 20000
    async with sessionmaker.begin() as session:
        assert await ProvisionerService(session).release(first) is None


async def test_a_port_taken_outside_the_lock_is_skipped(
    sessionmaker: async_sessionmaker[AsyncSession], add_server: AddServer
) -> None:
    """The unique constraint, not the lock, is the guarantee: a colliding insert moves on."""
    server_id = await add_server("one")
    async with sessionmaker() as blocker:
        blocker.add(PortAllocation(server_id=server_id, port=20000, project_id=uuid.uuid4()))
        await blocker.flush()  # uncommitted: invisible to the allocator, but the index sees it
        pending = asyncio.create_task(allocate(sessionmaker))
        await asyncio.sleep(0.3)
        await blocker.commit()
    assert (await pending).port == 20001
