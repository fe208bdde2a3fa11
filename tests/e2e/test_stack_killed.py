"""The whole stack killed with ten projects in flight, started again: all ten go live, once.

A power cut, an out-of-memory kill of the whole cgroup, `kill -9` on a process group: every
process of `orchestrator up` (the launcher, each consumer, nats-server, PostgreSQL, OpenBao,
sshd, git daemon and whatever they forked) dies at the same instant, with no shutdown code
run anywhere. The test waits, on the read model, until the ten projects are spread over the
pipeline, kills everything at once and starts `orchestrator up` again on the same state
directory, as an operator would. The spread is made, not hoped for: six projects go first;
once three of them are deploying or live the engineer is frozen (SIGSTOP, a process that has
stalled), the other four are sent, and the stack is killed as soon as their requests are on
the stream. A project is built in about a second on a quiet machine, so without the freeze the
second wave could pass its builds before the kill (it did, under load).

What must hold afterwards is what the design promises: JetStream redelivers what was not
acknowledged, the inbox and the natural keys make a redelivered step converge, and the
outbox relays what was committed but not yet published. Every project ends `active` on a
port of its own with its service answering, nothing is doubled (projects, ports, successful
deployments, timeline entries) and nothing is dead-lettered. Deployed services are not the
stack: those already live keep running through the outage.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections import Counter

import pytest

from .conftest import MIXED_KINDS, LocalStackProcess, _cmdline, new_state_dir
from .test_pipeline_offline import get_json, own_port_range, sql, unique_name
from .test_redelivery import consumer_pid

PROJECTS = 10
#: Sent first; the rest follow once three of these are deploying or live.
FIRST_WAVE = 6
#: States a project is in before its deploy starts, and from the deploy on.
EARLY = {"requested", "specifying", "specified", "provisioning", "building"}
LATE = {"deploying", "awaiting_secrets", "active"}
SETTLED = {"active", "failed", "archived", "awaiting_answer"}
#: Outcomes of the pipeline each project records exactly once, however often a step ran.
ONCE = (
    "intents.project.requested",
    "project.spec.ready",
    "project.resources.allocated",
    "project.repo.created",
    "project.code.generated",
    "deploy.succeeded",
)


@pytest.mark.timeout(1200)
def test_stack_killed_with_ten_projects_in_flight_recovers_all_of_them() -> None:
    stack = LocalStackProcess(new_state_dir("killed"), env={"ORCH_LLM__PROVIDER": "offline"})
    try:
        started = time.monotonic()
        stack.start()
        own_port_range(stack)
        names = [unique_name(f"killed-{i:02d}") for i in range(PROJECTS)]
        project_ids = submit(stack, names[:FIRST_WAVE])
        # A secret stored before the kill must still be in Vault after the restart.
        kept = stack.cli("secrets", "set", project_ids[0], "WEBHOOK_SECRET", stdin=uuid.uuid4().hex)
        assert kept.returncode == 0, kept.stdout + kept.stderr
        tokens: dict[str, str] = {}
        resumed: set[str] = set()

        # The first wave's deploys under way (polled on the read model, never slept for)...
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            first = states(stack, project_ids)
            store_tokens(stack, first, tokens, resumed)
            if sum(state in LATE for state in first.values()) >= 3:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"three projects never reached their deploys: {first}")
        # ...then the engineer frozen, so no project passes its build any more, the second wave
        # sent, and the kill as soon as its requests are on the stream. A request the
        # coordinator has not recorded yet is in flight too: it counts as requested.
        os.killpg(consumer_pid(stack, "engineer"), signal.SIGSTOP)
        project_ids += submit(stack, names[FIRST_WAVE:], offset=FIRST_WAVE)
        recorded = states(stack, project_ids)
        killed = stack.kill()
        before_kill = {pid: recorded.get(pid, "requested") for pid in project_ids}
        late = sum(state in LATE for state in before_kill.values())
        early = sum(state in EARLY for state in before_kill.values())
        assert late >= 3 and early >= 2, f"not spread over the pipeline: {before_kill}"
        killed_at = time.monotonic()
        print(
            f"\nkilled {len(killed)} processes {killed_at - started:.1f}s after the start, "
            f"projects: {sorted(Counter(before_kill.values()).items())}"
        )
        leftovers = {pid: _cmdline(pid) for pid in stack.stack_leftovers()}
        assert leftovers == {}, leftovers

        stack.start()
        restarted_in = time.monotonic() - killed_at
        own_port_range(stack)  # the restart registers the local target again
        # Six or seven builds and deploys still to go on two cores: about five minutes.
        deadline = time.monotonic() + 480
        after: dict[str, str] = {}
        while time.monotonic() < deadline:
            after = states(stack, project_ids)
            store_tokens(stack, after, tokens, resumed)
            if len(after) == PROJECTS and all(state in SETTLED for state in after.values()):
                break
            time.sleep(1)
        recovered_in = time.monotonic() - killed_at

        rows = sql(
            stack,
            "SELECT id::text, slug, state, port, url, error FROM projects WHERE slug = ANY(%s)",
            names,
        )
        assert len(rows) == PROJECTS, f"{len(rows)} projects for {PROJECTS} names: {rows}"
        stalled = [(row[1], row[2], row[5]) for row in rows if row[2] != "active"]
        assert not stalled, f"{stalled}{stack.diagnostics()}"
        assert sorted(row[0] for row in rows) == sorted(project_ids)
        ports = [row[3] for row in rows]
        assert len(set(ports)) == PROJECTS, sorted(ports)
        for _, slug, _, port, url, _ in rows:
            assert str(url).endswith(f":{port}"), (slug, url, port)
            assert get_json(f"{url}/health")["status"] == "ok", slug

        allocations = sql(
            stack,
            "SELECT count(*), count(DISTINCT port) FROM port_allocations "
            "WHERE project_id::text = ANY(%s)",
            project_ids,
        )
        assert allocations == [(PROJECTS, PROJECTS)], allocations
        deployments = sql(
            stack,
            "SELECT project_id::text, count(*) FROM deployments "
            "WHERE status = 'succeeded' AND project_id::text = ANY(%s) "
            "GROUP BY project_id",
            project_ids,
        )
        assert sorted(deployments) == sorted((pid, 1) for pid in project_ids), deployments
        timelines = sql(
            stack,
            "SELECT project_id::text, event_type, count(*) FROM project_events "
            "WHERE project_id::text = ANY(%s) GROUP BY 1, 2",
            project_ids,
        )
        counts = {(pid, kind): count for pid, kind, count in timelines}
        doubled_or_missing = {
            (pid[:8], kind, counts.get((pid, kind), 0))
            for pid in project_ids
            for kind in ONCE
            if counts.get((pid, kind), 0) != 1
        }
        assert not doubled_or_missing, doubled_or_missing

        for project_id, names_stored in (
            (project_ids[0], {"WEBHOOK_SECRET"}),
            *((bot, {"TELEGRAM_BOT_TOKEN"}) for bot in tokens),
        ):
            listed = stack.cli("secrets", "list", project_id, "--json")
            assert listed.returncode == 0, listed.stdout + listed.stderr
            assert names_stored <= set(json.loads(listed.stdout)["stored"]), listed.stdout

        dead = stack.cli("dlq", "list", "--json")
        assert dead.returncode == 0, dead.stdout + dead.stderr
        assert json.loads(dead.stdout) == [], dead.stdout
        print(
            f"restarted in {restarted_in:.1f}s, all {PROJECTS} active {recovered_in:.1f}s "
            f"after the kill, {time.monotonic() - started:.1f}s in all"
        )
    finally:
        stack.stop()


def submit(stack: LocalStackProcess, names: list[str], offset: int = 0) -> list[str]:
    """Every request at once through the CLI, as many terminals would send them; the kinds
    take turns, counted from `offset`."""
    descriptions = [
        MIXED_KINDS[(offset + i) % len(MIXED_KINDS)].format(name=name)
        for i, name in enumerate(names)
    ]
    return stack.request_at_once(descriptions, timeout=300)


def states(stack: LocalStackProcess, project_ids: list[str]) -> dict[str, str]:
    rows = sql(stack, "SELECT id::text, state FROM projects WHERE id::text = ANY(%s)", project_ids)
    return {str(project_id): str(state) for project_id, state in rows}


def store_tokens(
    stack: LocalStackProcess, current: dict[str, str], tokens: dict[str, str], resumed: set[str]
) -> None:
    """A bot's deploy waits for its token; its owner stores it once, as a person would.

    Once only: a bot that waits again after its deploy resumed lost a secret it had been
    given, and must fail the test rather than be handed the token a second time.
    """
    for project_id, state in current.items():
        if project_id in tokens and state != "awaiting_secrets":
            resumed.add(project_id)
        if state != "awaiting_secrets" or (project_id in tokens and project_id not in resumed):
            continue
        assert project_id not in resumed, (
            f"{project_id} waits for TELEGRAM_BOT_TOKEN again: the token stored before the "
            "kill did not survive the restart"
        )
        tokens[project_id] = f"{random.randrange(10**9, 10**10)}:AA{uuid.uuid4().hex}"
        result = stack.cli(
            "secrets", "set", project_id, "TELEGRAM_BOT_TOKEN", stdin=tokens[project_id]
        )
        assert result.returncode == 0, result.stderr
