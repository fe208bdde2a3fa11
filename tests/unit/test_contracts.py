"""The contracts' own rules: additive schema changes only, described fields, one home per subject.

Each event's JSON Schema is snapshotted in `tests/unit/schemas/<event type>.json`. A change that
would break a reader or a producer still running the old code (a removed field, a changed type,
a newly required field) fails here for good: such a change is a new event type. An additive
change fails until it is accepted with `UPDATE_SCHEMAS=1`, and one that changes the schema's
structure (not only its wording) must also bump the event's `SCHEMA_VERSION`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.envelope import Event, derived_event_id
from contracts.events import (
    EVENT_TYPES,
    DeployRequested,
    NotificationRequested,
    ProjectRequested,
    SchedulerTick,
    SpecRequested,
)
from contracts.topology import (
    CONSUMERS,
    DLQ,
    STREAMS,
    dlq_subject,
    stream_for_subject,
    tick_subject,
)
from infra.bus.codec import decode, encode, event_type_of
from infra.catalogue import TERMINAL_EVENTS, consumers_of_event

SCHEMAS = Path(__file__).parent / "schemas"
UPDATE = os.environ.get("UPDATE_SCHEMAS") == "1"
ACCEPT = "UPDATE_SCHEMAS=1 .venv/bin/pytest tests/unit/test_contracts.py"

#: Keys that describe a schema without constraining what validates against it.
ANNOTATIONS = frozenset({"description", "title", "examples"})

EVENTS = sorted(EVENT_TYPES.items())


# ---------------------------------------------------------------- schema snapshots


def snapshot_path(event_type: str) -> Path:
    return SCHEMAS / f"{event_type}.json"


def snapshot_of(cls: type[Event]) -> dict[str, Any]:
    return {
        "event_type": cls.TYPE,
        "schema_version": cls.SCHEMA_VERSION,
        "json_schema": cls.model_json_schema(),
    }


def dump(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


#: Keys whose values map names (of fields, of definitions) to schemas.
NAMED_SCHEMAS = frozenset({"properties", "$defs"})


def shape(schema: Any) -> Any:
    """The schema without its annotations and defaults: what a validator checks.

    A missing default shows up as a newly required field, so defaults need no comparison.
    """
    if isinstance(schema, list):
        return [shape(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: {name: shape(sub) for name, sub in value.items()}
        if key in NAMED_SCHEMAS
        else shape(value)
        for key, value in schema.items()
        if key not in ANNOTATIONS | {"default"}
    }


def property_type(schema: dict[str, Any]) -> Any:
    """A property's type and constraints; a nested model counts by its `$ref` (compared apart)."""
    return shape(schema)


def breaking_changes(old: dict[str, Any], new: dict[str, Any], where: str) -> Iterator[str]:
    """What in `new` breaks a reader or producer of `old`: removed, retyped or newly required."""
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for name, old_prop in old_props.items():
        if name not in new_props:
            yield f"{where}.{name} was removed"
        elif property_type(old_prop) != property_type(new_props[name]):
            yield (
                f"{where}.{name} changed type from {json.dumps(property_type(old_prop))} "
                f"to {json.dumps(property_type(new_props[name]))}"
            )
    for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
        yield f"{where}.{name} is newly required"
    if "enum" in old and old.get("enum") != new.get("enum"):
        yield f"{where} changed its values from {old['enum']} to {new.get('enum')}"
    old_defs: dict[str, Any] = old.get("$defs", {})
    new_defs: dict[str, Any] = new.get("$defs", {})
    for name, old_def in old_defs.items():
        if name in new_defs:
            yield from breaking_changes(old_def, new_defs[name], name)


@pytest.mark.parametrize(("event_type", "cls"), EVENTS, ids=[t for t, _ in EVENTS])
def test_schema_changes_are_additive(event_type: str, cls: type[Event]) -> None:
    path = snapshot_path(event_type)
    current = snapshot_of(cls)
    if not path.exists():
        if UPDATE:
            SCHEMAS.mkdir(exist_ok=True)
            path.write_text(dump(current), encoding="utf-8")
            return
        pytest.fail(f"{event_type} has no schema snapshot yet; record it with `{ACCEPT}`")
    recorded = json.loads(path.read_text(encoding="utf-8"))
    if recorded == json.loads(dump(current)):
        return

    breaking = list(breaking_changes(recorded["json_schema"], current["json_schema"], cls.__name__))
    assert not breaking, (
        f"{event_type} changed in a way its readers cannot follow:\n  - "
        + "\n  - ".join(breaking)
        + f"\nEvents are additive. Restore {cls.__name__} and publish a new event type "
        "(for example with a `.v2` suffix) alongside it; consumers move over, then the old "
        "type is retired once nothing emits it."
    )
    old_version, new_version = recorded["schema_version"], current["schema_version"]
    assert new_version >= old_version, (
        f"{cls.__name__}.SCHEMA_VERSION went down from {old_version} to {new_version}"
    )
    structural = shape(recorded["json_schema"]) != shape(current["json_schema"])
    assert not structural or new_version > old_version, (
        f"{event_type} gained fields or values (an additive change): bump "
        f"{cls.__name__}.SCHEMA_VERSION to {old_version + 1}, then record it with `{ACCEPT}`"
    )
    if UPDATE:
        path.write_text(dump(current), encoding="utf-8")
        return
    pytest.fail(
        f"{event_type}'s schema changed additively; review the diff of {path.name} and "
        f"accept it with `{ACCEPT}`"
    )


def test_every_snapshot_belongs_to_a_live_event_type() -> None:
    orphans = sorted(p.stem for p in SCHEMAS.glob("*.json") if p.stem not in EVENT_TYPES)
    assert not orphans, (
        f"snapshots without an event type: {orphans}. Removing an event type breaks whoever "
        "still publishes or reads it; keep the class in contracts.events until nothing does."
    )


def test_breaking_changes_are_recognised() -> None:
    old: dict[str, Any] = {
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "string"}},
        "required": ["a"],
    }
    new: dict[str, Any] = {
        "properties": {"a": {"type": "integer"}, "c": {"type": "string"}, "d": {"type": "string"}},
        "required": ["a", "c"],
    }
    assert list(breaking_changes(old, new, "E")) == [
        'E.a changed type from {"type": "string"} to {"type": "integer"}',
        "E.b was removed",
        "E.c is newly required",
    ]
    widened = {**old, "properties": {**old["properties"], "e": {"type": "string"}}}
    assert list(breaking_changes(old, widened, "E")) == []
    # A field called `description` is a field, not an annotation.
    described = {"properties": {"description": {"type": "string", "description": "d"}}}
    assert shape(described) == {"properties": {"description": {"type": "string"}}}


# ---------------------------------------------------------------- descriptions


def object_schemas(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield schema.get("title", "?"), schema
    yield from schema.get("$defs", {}).items()


@pytest.mark.parametrize(("event_type", "cls"), EVENTS, ids=[t for t, _ in EVENTS])
def test_every_field_is_described(event_type: str, cls: type[Event]) -> None:
    assert (cls.__doc__ or "").strip(), (
        f"{cls.__name__} needs a docstring: it is its catalogue entry"
    )
    undescribed = [
        f"{owner}.{name}"
        for owner, schema in object_schemas(cls.model_json_schema())
        for name, prop in schema.get("properties", {}).items()
        if not str(prop.get("description", "")).strip()
    ]
    assert not undescribed, (
        f"{event_type}: fields without a description (the AsyncAPI catalogue shows them "
        f"as blanks): {undescribed}"
    )


# ---------------------------------------------------------------- names and subjects


def test_event_types_are_registered_under_their_own_type() -> None:
    assert all(type_name == cls.TYPE for type_name, cls in EVENT_TYPES.items())
    assert len({cls.__name__ for cls in EVENT_TYPES.values()}) == len(EVENT_TYPES)


@pytest.mark.parametrize(("event_type", "cls"), EVENTS, ids=[t for t, _ in EVENTS])
def test_every_event_type_has_a_stream(event_type: str, cls: type[Event]) -> None:
    stream = stream_for_subject(event_type)
    head = event_type.split(".", 1)[0]
    assert [s for s in stream.subjects if s.split(".", 1)[0] == head], stream
    assert stream is not DLQ


def test_a_subject_without_a_stream_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"add it to contracts\.topology"):
        stream_for_subject("nowhere.at.all")


def test_streams_own_disjoint_subjects() -> None:
    heads = [s.split(".", 1)[0] for stream in STREAMS for s in stream.subjects]
    assert len(heads) == len(set(heads))


@pytest.mark.parametrize("spec", CONSUMERS, ids=[c.durable for c in CONSUMERS])
def test_consumer_subjects_belong_to_its_stream(spec: Any) -> None:
    for subject in spec.subjects:
        assert stream_for_subject(subject) is spec.stream, (
            f"{spec.durable} filters {subject}, which stream {spec.stream.name} does not store"
        )
        assert event_type_of(subject, None) in EVENT_TYPES, f"{subject} is no event's subject"
    assert stream_for_subject(dlq_subject(spec.durable)) is DLQ


def test_durable_names_are_unique() -> None:
    durables = [spec.durable for spec in CONSUMERS]
    assert len(durables) == len(set(durables))


@pytest.mark.parametrize(("event_type", "cls"), EVENTS, ids=[t for t, _ in EVENTS])
def test_every_event_is_consumed_or_documented_as_terminal(
    event_type: str, cls: type[Event]
) -> None:
    consumed = bool(consumers_of_event(cls))
    if cls in TERMINAL_EVENTS:
        assert not consumed, (
            f"{event_type} is consumed now: remove it from infra.catalogue.TERMINAL_EVENTS"
        )
    else:
        assert consumed, (
            f"no durable consumes {event_type}: add it to a ConsumerSpec in contracts.topology, "
            "or say why nothing needs to in infra.catalogue.TERMINAL_EVENTS"
        )


# ---------------------------------------------------------------- envelope behaviour


def a_request() -> ProjectRequested:
    return ProjectRequested(
        correlation_id=uuid.uuid4(),
        actor="cli:ann",
        project_id=uuid.uuid4(),
        description="a bot that tracks expenses",
        user_id="cli:ann",
        source="cli",
    )


def test_derived_ids_are_deterministic() -> None:
    cause = a_request()
    first = cause.derive(
        SpecRequested, actor="coordinator", project_id=uuid.uuid4(), description="x"
    )
    again = cause.derive(
        SpecRequested, actor="coordinator", project_id=uuid.uuid4(), description="y"
    )
    assert first.event_id == again.event_id
    assert first.event_id == derived_event_id("coordinator", cause.event_id, SpecRequested.TYPE)
    assert (first.causation_id, first.correlation_id) == (cause.event_id, cause.correlation_id)
    assert (first.actor, first.event_type, first.schema_version) == (
        "coordinator",
        SpecRequested.TYPE,
        SpecRequested.SCHEMA_VERSION,
    )


def test_derived_ids_differ_by_consumer_type_index_and_cause() -> None:
    cause = a_request()
    payload: dict[str, Any] = {
        "project_id": cause.project_id,
        "user_id": "cli:ann",
        "kind": "info",
        "text": "hi",
    }
    ids = {
        cause.derive(NotificationRequested, actor="coordinator", **payload).event_id,
        cause.derive(NotificationRequested, actor="coordinator", index=1, **payload).event_id,
        cause.derive(NotificationRequested, actor="ops", **payload).event_id,
        cause.derive(SpecRequested, actor="coordinator", project_id=cause.project_id,
                     description="x").event_id,
        a_request().derive(NotificationRequested, actor="coordinator", **payload).event_id,
    }  # fmt: skip
    assert len(ids) == 5


def test_an_intent_has_a_random_id_and_no_cause() -> None:
    first, second = a_request(), a_request()
    assert first.event_id != second.event_id
    assert first.causation_id is None


def test_tick_subjects_carry_the_job() -> None:
    tick = SchedulerTick(correlation_id=uuid.uuid4(), actor="scheduler", job="health", period="p")
    assert tick.subject_name() == "ops.tick.health" == tick_subject("health")
    assert event_type_of(tick.subject_name(), None) == SchedulerTick.TYPE
    subject, body, headers = encode(tick)
    assert subject == "ops.tick.health"
    assert decode(subject, body, headers) == tick
    # Without the type header (a hand-published tick) the subject still names the type.
    assert decode(subject, body, None) == tick


def test_other_events_are_published_on_their_type() -> None:
    request = a_request()
    assert request.subject_name() == ProjectRequested.TYPE
    assert DeployRequested.subject_name is Event.subject_name


def test_events_are_frozen_and_tolerate_unknown_fields() -> None:
    request = a_request()
    with pytest.raises(ValueError, match="frozen"):
        request.description = "changed"  # type: ignore[misc]
    newer = json.loads(request.model_dump_json()) | {"field_from_a_newer_producer": 1}
    assert ProjectRequested.model_validate(newer) == request
