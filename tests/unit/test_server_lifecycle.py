"""The server lifecycle table: every allowed move passes, every other one is refused clearly."""

from __future__ import annotations

import itertools

import pytest

from infra.db.enums import ServerState
from infra.server_lifecycle import TRANSITIONS, TransitionRefused, check

S = ServerState


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (S.NEW, S.PROVISIONING),
        (S.PROVISIONING, S.READY),
        (S.PROVISIONING, S.NEW),
        (S.READY, S.UNREACHABLE),
        (S.UNREACHABLE, S.READY),
        (S.READY, S.DRAINING),
        (S.DRAINING, S.RETIRED),
        (S.UNREACHABLE, S.PROVISIONING),
    ],
)
def test_the_lifecycle_moves_are_allowed(before: ServerState, after: ServerState) -> None:
    check("web-1", before, after)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (S.NEW, S.READY),  # a server is ready only after a bootstrap
        (S.NEW, S.UNREACHABLE),
        (S.DRAINING, S.PROVISIONING),  # bootstrapping would put it back into placement
        (S.DRAINING, S.UNREACHABLE),
        (S.RETIRED, S.READY),
        (S.READY, S.NEW),
    ],
)
def test_other_moves_are_refused_with_what_is_allowed(
    before: ServerState, after: ServerState
) -> None:
    with pytest.raises(TransitionRefused) as caught:
        check("web-1", before, after)
    message = str(caught.value)
    assert f"server 'web-1' is {before} and cannot become {after}" in message
    assert "may become" in message


def test_retired_is_final_and_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(ServerState)
    assert TRANSITIONS[S.RETIRED] == frozenset()
    with pytest.raises(TransitionRefused, match="nothing \\(it is final\\)"):
        check("old", S.RETIRED, S.DRAINING)
    refused = [
        (a, b) for a, b in itertools.product(ServerState, ServerState) if b not in TRANSITIONS[a]
    ]
    for before, after in refused:
        with pytest.raises(TransitionRefused):
            check("x", before, after)
