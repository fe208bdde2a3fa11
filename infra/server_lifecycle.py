"""A server's lifecycle: the states, the moves allowed between them, and the one way to move.

    new ──bootstrap──► provisioning ──ok──► ready ◄──healthy again── unreachable
     ▲                     │                  │  └──health check fails──►┘
     └──bootstrap failed───┘                  ├──► draining (no new projects; its own stay)
                                              └──► retired (terminal; nothing runs there)

Only `ready` servers take new projects (the provisioner's placement reads the state, never
writes it). Every writer goes through `transition`, which locks the row, refuses a move the
table below does not allow and records why the server is where it is.

Who moves a server: the ops consumer owns the automatic moves (its `server-health` job turns
`ready` into `unreachable` and back), because it already owns incidents and probing, and a
state that follows health must be written where health is measured. The operator's
`orchestrator servers bootstrap` moves `new`/`unreachable`/`ready` through `provisioning` to
`ready` or back to `new`, in the CLI process, like `servers add` and `remove` write the
inventory there: it runs Ansible synchronously and the operator waits for its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.enums import ServerState
from infra.db.models import Server

S = ServerState

#: Every allowed move. A state not listed as a source cannot be left (retired).
TRANSITIONS: dict[ServerState, frozenset[ServerState]] = {
    S.NEW: frozenset({S.PROVISIONING, S.RETIRED}),
    # provisioning → provisioning: a bootstrap whose CLI died may be run again.
    S.PROVISIONING: frozenset({S.PROVISIONING, S.READY, S.NEW}),
    S.READY: frozenset({S.PROVISIONING, S.UNREACHABLE, S.DRAINING, S.RETIRED}),
    S.UNREACHABLE: frozenset({S.READY, S.PROVISIONING, S.DRAINING, S.RETIRED}),
    S.DRAINING: frozenset({S.READY, S.RETIRED}),
    S.RETIRED: frozenset(),
}

#: States the health job checks (a retired server is gone; a new one was never prepared).
MONITORED: frozenset[ServerState] = frozenset({S.READY, S.UNREACHABLE, S.DRAINING})


class TransitionRefused(Exception):
    """The server cannot move from its state to the one asked for; the message says why."""


@dataclass(frozen=True)
class Moved:
    """One applied transition (`before == after` never happens: see `transition`)."""

    name: str
    before: ServerState
    after: ServerState
    reason: str


def check(name: str, before: ServerState, after: ServerState) -> None:
    """Raise `TransitionRefused` unless `before → after` is in `TRANSITIONS`."""
    if after not in TRANSITIONS[before]:
        allowed = ", ".join(sorted(TRANSITIONS[before])) or "nothing (it is final)"
        raise TransitionRefused(
            f"server {name!r} is {before} and cannot become {after}; from {before} it may "
            f"become {allowed}"
        )


async def transition(
    session: AsyncSession, name: str, after: ServerState, reason: str = ""
) -> Moved:
    """Move server `name` to `after` inside the caller's transaction, the row locked.

    Raises `TransitionRefused` for a move the table forbids and `LookupError` for an
    unknown server; the caller commits (with whatever else the move implies: an incident).
    """
    server = await session.scalar(select(Server).where(Server.name == name).with_for_update())
    if server is None:
        raise LookupError(f"no server named {name!r}; `orchestrator servers list` shows them")
    before = ServerState(server.state)
    check(name, before, after)
    server.state = after
    server.state_reason = reason
    server.state_changed_at = datetime.now(UTC)
    return Moved(name=name, before=before, after=after, reason=reason)
