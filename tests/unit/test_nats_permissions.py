"""The NATS permissions generated from `contracts.topology` are the least each process needs.

These are the properties a reviewer would otherwise check by reading a long config: who may
command a deploy, who may pull or acknowledge a durable, who may change streams, and that a
process cannot listen to another's replies. The integration test (tests/integration/
test_nats_auth.py) proves the server enforces them; the e2e runs prove they are enough.
"""

from __future__ import annotations

import re

from contracts import events as ev
from contracts.topology import (
    CONSUMER_EMITS,
    CONSUMERS,
    DEPLOYER,
    ENGINEER,
    MEMORY_SEARCH_SUBJECT,
    OPS_SERVER_TICKS,
    PRODUCER_EMITS,
    PROJECT,
    STREAMS,
    dlq_subject,
    stream_for_subject,
)
from infra.bus.permissions import (
    ADMIN,
    EXTERNAL,
    LAG_EXPORTER,
    Permissions,
    all_permissions,
    inbox_prefix,
    render_authorization,
    subject_matches,
)

USERS = all_permissions()
PLATFORM = {name: perms for name, perms in USERS.items() if name != ADMIN}


def publishers_of(subject: str) -> set[str]:
    return {name for name, perms in PLATFORM.items() if perms.may_publish(subject)}


def test_only_the_coordinator_may_command_steps_and_deploys() -> None:
    for command in (
        ev.DeployRequested,
        ev.CodeRequested,
        ev.RepoRequested,
        ev.ProvisionRequested,
        ev.SpecRequested,
        ev.ProjectArchived,
    ):
        assert publishers_of(command.TYPE) == {"coordinator"}, command.TYPE


def test_each_outcome_has_exactly_its_step_as_publisher() -> None:
    assert publishers_of(ev.SpecReady.TYPE) == {"analyst"}
    assert publishers_of(ev.ResourcesAllocated.TYPE) == {"provisioner"}
    assert publishers_of(ev.RepoCreated.TYPE) == {"repo"}
    assert publishers_of(ev.CodeGenerated.TYPE) == {"engineer"}
    assert publishers_of(ev.DeploySucceeded.TYPE) == {"deployer"}
    # Incidents come from ops' health sweep and from the repo process's reconciliation, which
    # also frees the ports nothing listens on.
    assert publishers_of(ev.IncidentOpened.TYPE) == {"ops", "repo"}
    assert publishers_of(ev.ResourcesReleased.TYPE) == {"provisioner", "repo"}


def test_every_event_type_has_a_publisher_and_a_stream() -> None:
    """A new event must be added to an `emits` table, or its publisher is refused at runtime."""
    for event_type in ev.EVENT_TYPES:
        subject = event_type if event_type != ev.SchedulerTick.TYPE else f"{event_type}.health"
        assert publishers_of(subject), f"nobody may publish {event_type}"
        stream_for_subject(subject)


def test_intents_come_from_producers_and_the_external_user_only() -> None:
    assert publishers_of(ev.ProjectRequested.TYPE) == {"api", "telegram_bot", EXTERNAL}
    assert USERS[EXTERNAL].publish == ("intents.>",)
    assert publishers_of(f"{ev.SchedulerTick.TYPE}.timeouts") == {"scheduler"}
    for producer, perms in PLATFORM.items():
        if producer in PRODUCER_EMITS:
            commands = [s for s in perms.publish if not s.startswith(("intents.", "$JS.API."))]
            # Besides intents: stored secret names, ticks, and the API's alert notifications.
            allowed = {ev.SecretStored.TYPE, f"{ev.SchedulerTick.TYPE}.>"}
            if producer == "api":
                allowed.add(ev.NotificationRequested.TYPE)
            assert set(commands) <= allowed, producer


def test_a_durable_is_pulled_and_acknowledged_by_its_own_process_only() -> None:
    for spec in CONSUMERS:
        stream, durable = spec.stream.name, spec.durable
        owners = {spec.process}
        assert publishers_of(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}") == owners
        assert publishers_of(f"$JS.ACK.{stream}.{durable}.1.2.3.4.5") == owners
        assert publishers_of(f"$JS.API.CONSUMER.CREATE.{stream}.{durable}") == owners
        assert publishers_of(dlq_subject(durable)) == owners


def test_nobody_but_the_admin_manages_streams_or_deletes_messages() -> None:
    for stream in STREAMS:
        for action in ("CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE"):
            assert publishers_of(f"$JS.API.STREAM.{action}.{stream.name}") == set()
    assert publishers_of("$JS.API.CONSUMER.DELETE.DEPLOY.deployer") == set()
    assert publishers_of("$JS.API.CONSUMER.CREATE.DEPLOY.rogue") == set()
    assert USERS[ADMIN] == Permissions((">",), (">",))


def test_replies_are_private_to_each_user() -> None:
    for name, perms in PLATFORM.items():
        others = [inbox_prefix(other) for other in PLATFORM if other != name]
        assert not any(perms.may_subscribe(f"{prefix}.x") for prefix in others), name
        assert not perms.may_subscribe("deploy.requested"), name
        if name not in (EXTERNAL, "indexer"):
            assert perms.subscribe == (f"{inbox_prefix(name)}.>",)


def test_only_the_analyst_and_engineer_ask_memory_and_only_the_indexer_answers() -> None:
    assert publishers_of(MEMORY_SEARCH_SUBJECT) == {"analyst", "engineer"}
    subscribers = {name for name, perms in PLATFORM.items() if perms.may_subscribe("memory.search")}
    assert subscribers == {"indexer"}
    assert USERS["indexer"].subscribe == (f"{inbox_prefix('indexer')}.>", MEMORY_SEARCH_SUBJECT)
    # It answers through `allow_responses` (only to a request it received), never by publishing
    # to another process's inbox.
    assert {name for name, perms in PLATFORM.items() if perms.allow_responses} == {"indexer"}
    assert not USERS["indexer"].may_publish(f"{inbox_prefix('analyst')}.x")
    text = render_authorization({"indexer": "pw", "analyst": "pw"})
    assert text.count("allow_responses: true") == 1


def test_every_process_of_the_topology_has_a_user() -> None:
    processes = {spec.process for spec in CONSUMERS} | set(CONSUMER_EMITS) | set(PRODUCER_EMITS)
    assert processes <= set(USERS)


def test_subject_matching_follows_nats_wildcards() -> None:
    assert subject_matches("intents.>", "intents.project.requested")
    assert not subject_matches("intents.>", "intents")
    assert subject_matches("$JS.ACK.DEPLOY.deployer.>", "$JS.ACK.DEPLOY.deployer.1.2")
    assert subject_matches("a.*.c", "a.b.c")
    assert not subject_matches("a.*.c", "a.b.d.c")
    assert not subject_matches("deploy.requested", "deploy.requested.x")


def test_rendered_config_holds_bcrypt_hashes_and_no_password() -> None:
    passwords = {"analyst": "clear-analyst-pw", EXTERNAL: "clear-external-pw"}
    text = render_authorization(passwords)
    assert "clear-" not in text
    assert len(re.findall(r'password: "\$2a\$06\$[./A-Za-z0-9]{53}"', text)) == 2
    assert '"project.spec.ready"' in text


def test_the_lag_exporter_reads_every_durable_and_nothing_else() -> None:
    exporter = USERS[LAG_EXPORTER]
    for spec in CONSUMERS:
        stream, durable = spec.stream.name, spec.durable
        assert exporter.may_publish(f"$JS.API.CONSUMER.INFO.{stream}.{durable}")
        assert not exporter.may_publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")
        assert not exporter.may_publish(f"$JS.ACK.{stream}.{durable}.1.2.3.4.5")
    assert all(exporter.may_publish(f"$JS.API.STREAM.INFO.{s.name}") for s in STREAMS)
    assert all(
        subject.startswith("$JS.API.") and ".INFO." in subject for subject in exporter.publish
    )


def test_the_coordinator_reads_the_build_and_deploy_queues_and_takes_nothing_from_them() -> None:
    coordinator = USERS["coordinator"]
    for spec in (ENGINEER, DEPLOYER):
        stream, durable = spec.stream.name, spec.durable
        assert coordinator.may_publish(f"$JS.API.CONSUMER.INFO.{stream}.{durable}")
        assert not coordinator.may_publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")
        assert not coordinator.may_publish(f"$JS.ACK.{stream}.{durable}.1.2.3.4.5")
    servers = OPS_SERVER_TICKS
    assert not coordinator.may_publish(f"$JS.API.CONSUMER.INFO.{servers.stream.name}.ops-servers")
    assert not USERS["analyst"].may_publish(f"$JS.API.CONSUMER.INFO.{PROJECT.name}.engineer")
