"""Where a project goes: which servers qualify, in what order, and which ports are free.

Pure functions, so the rules are tested exhaustively without a database; `service.py` feeds
them rows and lets PostgreSQL's unique constraints have the last word.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class ServerLoad:
    """One ready server and how many ports it has handed out."""

    server_id: int
    name: str
    labels: frozenset[str]
    capacity: int
    used: int


def rank_servers(servers: Iterable[ServerLoad], labels: Collection[str]) -> list[ServerLoad]:
    """Servers carrying every label with room left, least loaded (relative to capacity) first.

    Ties go to the name so that two replicas ranking the same inventory agree, which keeps
    placement predictable for an operator reading the table.
    """
    wanted = frozenset(labels)
    eligible = [s for s in servers if wanted <= s.labels and s.used < s.capacity]
    return sorted(eligible, key=lambda s: (Fraction(s.used, s.capacity), s.name))


def free_ports(port_min: int, port_max: int, used: Collection[int]) -> Iterator[int]:
    """Ports of `[port_min, port_max]` not in `used`, lowest first.

    Lowest-first keeps a server's ports compact and makes a released port the next one
    handed out, which is what an operator expects when reading firewall rules.
    """
    return (port for port in range(port_min, port_max + 1) if port not in used)
