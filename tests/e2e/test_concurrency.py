"""Twenty people ask at the same moment: every project goes live, on a port of its own.

The requests go in concurrently through the CLI, as twenty terminals would send them. Every
consumer shares its durable with itself only, so the test shows that the steps run side by
side without a lock: distinct ports come from the database's unique constraint, the join
deploys each project once, and nothing is lost or doubled. The wall time is printed.
"""

from __future__ import annotations

import random
import time
import uuid

import pytest

from .conftest import MIXED_KINDS, LocalStackProcess
from .test_pipeline_offline import get_json, own_port_range, sql, unique_name

PROJECTS = 20


@pytest.mark.timeout(1500)
def test_twenty_projects_at_once_all_go_live_on_distinct_ports(
    offline_stack: LocalStackProcess,
) -> None:
    own_port_range(offline_stack)
    names = [unique_name(f"crowd-{i:02d}") for i in range(PROJECTS)]
    started = time.monotonic()
    # Twenty CLI processes start at once on two cores beside a busy stack: allow for it.
    project_ids = offline_stack.request_at_once(
        [MIXED_KINDS[i % len(MIXED_KINDS)].format(name=name) for i, name in enumerate(names)],
        timeout=600,
    )
    submitted = time.monotonic() - started

    deadline = time.monotonic() + 1200
    rows: list[tuple[object, ...]] = []
    tokens_stored: set[str] = set()
    while time.monotonic() < deadline:
        rows = sql(offline_stack, "SELECT id::text, state, slug, port, url, error FROM projects "
                                  "WHERE id::text = ANY(%s)", project_ids)
        for row in rows:
            # A bot's deploy waits for its token, as its owner would store it.
            if row[1] == "awaiting_secrets" and str(row[0]) not in tokens_stored:
                result = offline_stack.cli(
                    "secrets", "set", str(row[0]), "TELEGRAM_BOT_TOKEN",
                    stdin=f"{random.randrange(10**9, 10**10)}:AA{uuid.uuid4().hex}",
                )
                assert result.returncode == 0, result.stderr
                tokens_stored.add(str(row[0]))
        if len(rows) == PROJECTS and all(row[1] in ("active", "failed") for row in rows):
            break
        time.sleep(2)
    elapsed = time.monotonic() - started
    assert len(rows) == PROJECTS, f"only {len(rows)} of {PROJECTS} projects exist"
    assert all(row[1] == "active" for row in rows), [
        (row[2], row[1], row[5]) for row in rows if row[1] != "active"
    ]
    ports = [row[3] for row in rows]
    assert len(set(ports)) == PROJECTS, sorted(ports)  # type: ignore[type-var]
    assert sorted(str(row[2]) for row in rows) == sorted(names)
    for row in rows:
        assert get_json(f"{row[4]}/health")["status"] == "ok"
    allocations = sql(offline_stack, "SELECT count(*), count(DISTINCT port) FROM port_allocations "
                                     "WHERE project_id::text = ANY(%s)", project_ids)
    assert allocations == [(PROJECTS, PROJECTS)], allocations
    deployments = sql(offline_stack, "SELECT count(*) FROM deployments WHERE status = 'succeeded' "
                                     "AND project_id::text = ANY(%s)", project_ids)
    assert deployments == [(PROJECTS,)], deployments
    print(f"\n{PROJECTS} projects: submitted in {submitted:.1f}s, all active "
          f"{elapsed:.1f}s after the first request")
