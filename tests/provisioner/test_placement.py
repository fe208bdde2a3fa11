"""The pure placement rules: ranking servers and choosing ports."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from consumers.provisioner.placement import ServerLoad, free_ports, rank_servers

port_ranges = st.tuples(st.integers(1024, 65000), st.integers(0, 300)).map(
    lambda t: (t[0], t[0] + t[1])
)


@given(port_ranges, st.data())
def test_free_ports_are_exactly_the_unused_ones_lowest_first(
    bounds: tuple[int, int], data: st.DataObject
) -> None:
    low, high = bounds
    used = data.draw(st.sets(st.integers(low - 5, high + 5)))
    ports = list(free_ports(low, high, used))
    assert ports == sorted(ports)
    assert set(ports) == set(range(low, high + 1)) - used


loads = st.builds(
    ServerLoad,
    server_id=st.integers(1, 10_000),
    name=st.text("abcdef", min_size=1, max_size=4),
    labels=st.frozensets(st.sampled_from(["gpu", "eu", "us", "ssd"])),
    capacity=st.integers(0, 10),
    used=st.integers(0, 12),
)


@given(st.lists(loads, max_size=12), st.sets(st.sampled_from(["gpu", "eu", "us", "ssd"])))
def test_ranking_keeps_only_fitting_servers_least_loaded_first(
    servers: list[ServerLoad], labels: set[str]
) -> None:
    ranked = rank_servers(servers, labels)
    assert all(labels <= s.labels and s.used < s.capacity for s in ranked)
    left_out = [s for s in servers if s not in ranked]
    assert all(not labels <= s.labels or s.used >= s.capacity for s in left_out)
    keys = [(Fraction(s.used, s.capacity), s.name) for s in ranked]
    assert keys == sorted(keys)


def test_relative_load_beats_absolute_load() -> None:
    big = ServerLoad(1, "big", frozenset(), capacity=100, used=10)
    small = ServerLoad(2, "small", frozenset(), capacity=4, used=2)
    assert [s.name for s in rank_servers([small, big], [])] == ["big", "small"]
