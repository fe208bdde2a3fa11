"""The ports a local stack's servers listen on: the same at every restart, never another stack's.

- **A restart keeps every address.** The git daemon's port is in every repository URL the stack
  stored (projects, events in flight); a stack that came back on another port left each build
  and deploy of its projects failing to clone ("connection refused") until they gave up.
  Each state directory remembers its ports in `ports.json`.
- **A new stack** takes the well-known port (4222, 5432, 8200, ...) when it is free and no
  other stack of this user holds it, even one that is down and will come back on it; otherwise
  a free port.
- **One stack at a time chooses.** Two stacks starting at once would both see 5432 free; the
  loser's server would die, or its readiness probe would reach the winner's (a Vault "already
  initialized"). The book is locked from the choice until the caller's servers listen.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from infra.stack.ports import free_port, port_is_free

#: Used when free, so a developer's tools find the stack where they expect.
WELL_KNOWN = {
    "nats": 4222,
    "nats_monitor": 8222,
    "postgres": 5432,
    "openbao": 8200,
    "sshd": 2222,
    "git": 9418,
}
#: Servers whose address the stack stores in its records: they cannot move on a restart.
STORED_ADDRESSES = frozenset({"git"})
#: In each state directory: the ports its stack's servers were given.
PORTS_FILE = "ports.json"
#: The user's list of state directories whose stacks hold ports.
BOOK_FILE = "stacks.json"


class PortTaken(RuntimeError):
    """A port the stack's records name is in use by another process."""


@contextlib.contextmanager
def booked_ports(state_dir: Path, proposed: Mapping[str, int]) -> Iterator[dict[str, int]]:
    """Ports for the servers named in `proposed` (free ports to fall back on), held booked.

    Start the servers inside the block: the book stays locked until they listen.
    """
    with _locked_book() as stacks:
        others = [other for other in stacks if other != state_dir]
        claimed = {port for other in others for port in remembered_ports(other).values()}
        remembered = remembered_ports(state_dir)
        chosen: dict[str, int] = {}
        for name, fallback in proposed.items():
            chosen[name] = _choose(name, remembered.get(name), fallback, claimed)
            claimed.add(chosen[name])  # two servers of this stack never share one either
        path = state_dir / PORTS_FILE
        path.write_text(json.dumps(chosen, indent=2, sort_keys=True) + "\n")
        stacks[:] = [*others, state_dir]
        yield chosen


def remembered_ports(state_dir: Path) -> dict[str, int]:
    """The ports the stack in `state_dir` was last given (none for a new or removed one)."""
    try:
        loaded = json.loads((state_dir / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(name): port for name, port in loaded.items() if isinstance(port, int)}


def _choose(name: str, remembered: int | None, fallback: int, claimed: set[int]) -> int:
    if remembered is not None:
        if remembered not in claimed and port_is_free(remembered):
            return remembered
        if name in STORED_ADDRESSES:
            raise PortTaken(
                f"port {remembered} of this stack's {name} is taken (by another process, or "
                f"another stack of this user has it), and "
                f"the stack's records name it (every repository URL is "
                f"git://127.0.0.1:{remembered}/...). Stop what listens there (see "
                f"`ss -ltnp 'sport = :{remembered}'`) and run `orchestrator up` again."
            )
    well_known = WELL_KNOWN.get(name)
    if well_known is not None and well_known not in claimed and port_is_free(well_known):
        return well_known
    port = fallback
    while port in claimed or not port_is_free(port):
        port = free_port()
    return port


@contextlib.contextmanager
def _locked_book() -> Iterator[list[Path]]:
    """The state directories of this user's stacks, locked; changes to the list are saved.

    Directories that no longer hold a ports file (removed, a test's temp dir) drop out. The
    book is the user's own state (`$XDG_STATE_HOME/orchestrator`), never a shared temp dir
    where another user could plant it.
    """
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    directory = Path(state_home) / "orchestrator"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (directory / BOOK_FILE).open("a+") as book:
        fcntl.flock(book, fcntl.LOCK_EX)
        book.seek(0)
        try:
            listed = json.loads(book.read() or "[]")
        except ValueError:
            listed = []
        stacks = [Path(entry) for entry in listed if isinstance(entry, str)]
        stacks = [stack for stack in stacks if (stack / PORTS_FILE).is_file()]
        yield stacks
        book.seek(0)
        book.truncate()
        book.write(json.dumps([str(stack) for stack in stacks]))
        book.flush()
