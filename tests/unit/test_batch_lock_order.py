"""A batch's handlers lock project rows in one order on every replica (no deadlocks).

Coordinator batches are one transaction each, and each handler locks its project's row. Two
replicas whose batches touch the same projects in different orders can deadlock; sorting every
batch by project id (stably, so one project's events keep their order) rules that out.
"""

from __future__ import annotations

import random
import uuid
from typing import cast

from nats.aio.msg import Msg

from contracts import events as ev
from infra.bus.runtime import _Delivery, lock_order


def answer(project_id: uuid.UUID, text: str) -> ev.ClarificationAnswered:
    return ev.ClarificationAnswered(
        correlation_id=uuid.uuid4(),
        actor="cli:test",
        project_id=project_id,
        answer=text,
        user_id="cli:test",
    )


def test_a_batch_is_ordered_by_project_and_keeps_each_projects_own_order() -> None:
    projects = [uuid.uuid4() for _ in range(5)]
    events = [answer(p, f"{p}-{n}") for n in range(3) for p in projects]
    random.Random(7).shuffle(events)
    batch = [_Delivery(cast(Msg, None), event) for event in events]

    ordered = [d.event for d in lock_order(batch)]

    ids = [str(cast(ev.ClarificationAnswered, e).project_id) for e in ordered]
    assert ids == sorted(ids)
    for project in projects:
        own = [e for e in events if e.project_id == project]
        assert [e for e in ordered if e in own] == own
