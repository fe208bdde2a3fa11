"""The event catalogue, generated from the code: AsyncAPI for tools, a Markdown page for people.

The contracts (`contracts.events`, `contracts.topology`) say what every event carries, which
stream stores it and which durable consumes it. Who *emits* an event is a fact of the
processes' code, so it is read from their source: a process emits an event when its code
constructs it or derives it (`cause.derive(Event, ...)`), directly or through the shared intent
builders in `producers/intents.py`. The source is parsed, never imported, so the platform still
imports no producer or consumer.

`python -m infra.catalogue --write` regenerates `docs/asyncapi.yaml` and `docs/events.md`;
`tests/unit/test_catalogue.py` fails while either is stale. The AsyncAPI document comes from
FastStream's own generator over a documentation-only `NatsBroker` that is never connected.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.specification import AsyncAPI
from pydantic.fields import FieldInfo

from contracts.envelope import Event
from contracts.events import (
    EVENT_TYPES,
    IncidentOpened,
    IncidentResolved,
    ResourcesReleased,
)
from contracts.topology import CONSUMERS, STREAMS, ConsumerSpec, stream_for_subject
from infra.bus.codec import event_type_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ASYNCAPI_FILE = DOCS / "asyncapi.yaml"
EVENTS_FILE = DOCS / "events.md"
REGENERATE = "python -m infra.catalogue --write"

#: The server the document names; the real URL is configuration (`ORCH_NATS__URL`).
DOCUMENTED_SERVER = "nats://127.0.0.1:4222"

#: Events that no durable consumes, and why that is right. Every other event type must have
#: a consumer (tests/unit/test_contracts.py checks both directions).
TERMINAL_EVENTS: dict[type[Event], str] = {
    ResourcesReleased: (
        "The last step of an archive (or the reconciliation freeing a port nothing listens "
        "on): nothing waits for the port; the event stays in the PROJECT stream for "
        "`orchestrator events tail`."
    ),
    IncidentOpened: (
        "A signal for operators: the `incidents` table holds the open incident (listed by "
        "`GET /admin/incidents` and `orchestrator reconcile`); ops' health sweep notifies the "
        "project's owner itself (a `notify.requested` it emits with it)."
    ),
    IncidentResolved: (
        "A signal for operators: the `incidents` table marks the incident resolved; nothing "
        "else changes when its condition is gone."
    ),
}

# Modules whose functions build events for several processes: each process that calls one of
# their functions emits what it builds; the module itself publishes nothing (intents for the
# producers; incidents for ops' health sweep and the repo process's reconciliation).
_BUILDER_MODULES = (
    Path("producers") / "intents.py",
    Path("producers") / "adoption.py",
    Path("infra") / "incidents.py",
)
_PROCESS_ROOTS = ("consumers", "producers")


# ---------------------------------------------------------------- facts from the contracts


def is_refined_subject(cls: type[Event]) -> bool:
    """True when the event's subject extends its type (ticks: `ops.tick.<job>`)."""
    return cls.subject_name is not Event.subject_name


def published_subject(cls: type[Event]) -> str:
    """The subject (or NATS wildcard) an event of `cls` is published on."""
    return f"{cls.TYPE}.*" if is_refined_subject(cls) else cls.TYPE


def consumed_subjects(cls: type[Event]) -> dict[str, tuple[ConsumerSpec, ...]]:
    """Each subject of `cls` some durable filters on, with the durables that do."""
    found: dict[str, list[ConsumerSpec]] = {}
    for spec in CONSUMERS:
        for subject in spec.subjects:
            if event_type_of(subject, None) == cls.TYPE:
                found.setdefault(subject, []).append(spec)
    return {subject: tuple(specs) for subject, specs in sorted(found.items())}


def consumers_of_event(cls: type[Event]) -> tuple[ConsumerSpec, ...]:
    """Every durable that receives events of `cls`, in topology order."""
    receiving = {s.durable for specs in consumed_subjects(cls).values() for s in specs}
    return tuple(spec for spec in CONSUMERS if spec.durable in receiving)


# ---------------------------------------------------------------- facts from the processes' code


def _event_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _built_events(tree: ast.AST, builders: Mapping[str, frozenset[str]]) -> set[str]:
    """Event type names a module constructs, derives, or gets from an intent builder."""
    by_class = {cls.__name__: cls.TYPE for cls in EVENT_TYPES.values()}
    built: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _event_name(node.func)
        if name is None:
            continue
        if name in by_class:
            built.add(by_class[name])
        elif name == "derive" and node.args:
            derived = _event_name(node.args[0])
            if derived is not None and derived in by_class:
                built.add(by_class[derived])
        elif name in builders:
            built |= builders[name]
    return built


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _builder_functions(root: Path) -> dict[str, frozenset[str]]:
    builders: dict[str, frozenset[str]] = {}
    for relative in _BUILDER_MODULES:
        for node in _parse(root / relative).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                events = _built_events(node, {})
                if events:
                    builders[node.name] = frozenset(events)
    return builders


def _process_units(root: Path) -> Iterator[tuple[str, list[Path]]]:
    """(process name, its source files): each package, and each top-level producer module."""
    for top in _PROCESS_ROOTS:
        for entry in sorted((root / top).iterdir()):
            if entry.is_dir() and (entry / "__init__.py").is_file():
                yield entry.name, sorted(entry.rglob("*.py"))
            elif (
                entry.suffix == ".py"
                and entry.name != "__init__.py"
                and entry.relative_to(root) not in _BUILDER_MODULES
            ):
                yield entry.stem, [entry]


def scan_emitters(root: Path = ROOT) -> dict[str, tuple[str, ...]]:
    """Event type → the processes whose code builds it, read from `consumers/` and `producers/`."""
    builders = _builder_functions(root)
    emitters: dict[str, set[str]] = {}
    for process, files in _process_units(root):
        for path in files:
            for event_type in _built_events(_parse(path), builders):
                emitters.setdefault(event_type, set()).add(process)
    return {event_type: tuple(sorted(names)) for event_type, names in emitters.items()}


@cache
def emitters() -> dict[str, tuple[str, ...]]:
    return scan_emitters(ROOT)


# ---------------------------------------------------------------- AsyncAPI


def _documented_handler(cls: type[Event]) -> Callable[..., Any]:
    """A handler whose only job is to tell FastStream's generator the message type."""

    async def handler(event: Any) -> None:
        """Never called: the broker is never connected."""

    # FastStream reads the payload type from the annotation; set it to the event class itself.
    handler.__annotations__ = {"event": cls, "return": None}
    handler.__name__ = handler.__qualname__ = cls.__name__
    return handler


def _doc(cls: type[Event]) -> str:
    return " ".join((cls.__doc__ or "").split())


def _names(items: Iterable[str]) -> str:
    listed = list(items)
    return ", ".join(listed) if listed else "nobody"


def build_catalogue_broker() -> NatsBroker:
    """A broker that declares every durable's subjects and every event, for documentation only.

    Channel titles must be unique (FastStream keys channels by title), so a subscriber's title
    is `<durable>:<subject>` and a publisher's is the event type.
    """
    broker = NatsBroker(
        DOCUMENTED_SERVER,
        description="Codegen Orchestrator: every event on NATS JetStream",
        logger=None,
    )
    for spec in CONSUMERS:
        for subject in spec.subjects:
            cls = EVENT_TYPES[event_type_of(subject, None)]
            subscriber = broker.subscriber(
                subject,
                stream=JStream(spec.stream.name, declare=False),
                durable=spec.durable,
                pull_sub=PullSub(),
                title=f"{spec.durable}:{subject}",
                description=(
                    f"Durable `{spec.durable}` ({spec.process} process) on stream "
                    f"{spec.stream.name}: {spec.description}."
                ),
                include_in_schema=True,
            )
            subscriber(_documented_handler(cls))
    for event_type, cls in sorted(EVENT_TYPES.items()):
        broker.publisher(
            published_subject(cls),
            stream=JStream(stream_for_subject(cls.TYPE).name, declare=False),
            title=event_type,
            description=f"{_doc(cls)} Emitted by: {_names(emitters().get(event_type, ()))}.",
            schema=cls,
            include_in_schema=True,
        )
    return broker


def _correct_correlation_ids(node: Any) -> Any:
    """FastStream documents its own correlation header; ours is the envelope's field."""
    if isinstance(node, dict):
        fixed = {key: _correct_correlation_ids(value) for key, value in node.items()}
        if "correlationId" in fixed:
            fixed["correlationId"] = {
                "description": "The project's flow id, shared by every event of one request",
                "location": "$message.payload#/correlation_id",
            }
        return fixed
    if isinstance(node, list):
        return [_correct_correlation_ids(item) for item in node]
    return node


def asyncapi_document() -> dict[str, Any]:
    specification = AsyncAPI(
        build_catalogue_broker(),
        title="Codegen Orchestrator events",
        version="1.0.0",
        description=(
            "Generated from contracts/ by `python -m infra.catalogue --write`; do not edit. "
            "Every message is JSON with the envelope fields first; publishers set "
            "`Nats-Msg-Id` to `event_id`, so a re-published event is dropped by the stream."
        ),
        schema_version="3.0.0",
    ).to_specification()
    document: dict[str, Any] = _correct_correlation_ids(specification.to_jsonable())
    return document


def render_asyncapi() -> str:
    """The AsyncAPI 3.0 document as YAML with sorted keys (identical on every run)."""
    rendered: str = yaml.safe_dump(
        asyncapi_document(), sort_keys=True, allow_unicode=True, width=100, indent=2
    )
    return rendered


# ---------------------------------------------------------------- Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def type_name(annotation: Any) -> str:
    """A field type as a reader would write it: `UUID | None`, `tuple[str, ...]`."""
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return f"{annotation.__name__} ({' / '.join(str(m.value) for m in annotation)})"
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " / ".join(repr(a) for a in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"tuple[{type_name(args[0])}, ...]"
    if args and origin is not None:
        if origin in (UnionType, Union):
            return " | ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(map(type_name, args))}]"
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "generated"
    value = field.default
    if isinstance(value, Enum):
        value = value.value
    return f"`{value!r}`"


def _field_rows(fields: Mapping[str, FieldInfo]) -> list[str]:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    rows += [
        f"| `{name}` | {_cell(type_name(field.annotation))} | {_cell(_default(field))} | "
        f"{_cell(field.description or '')} |"
        for name, field in fields.items()
    ]
    return rows


def _payload_fields(cls: type[Event]) -> dict[str, FieldInfo]:
    return {k: v for k, v in cls.model_fields.items() if k not in Event.model_fields}


def _anchor(event_type: str) -> str:
    return event_type.replace(".", "")


def _durable_list(specs: Sequence[ConsumerSpec]) -> str:
    return ", ".join(f"`{s.durable}` ({s.process})" for s in specs) or "nobody"


def render_events_markdown() -> str:
    """`docs/events.md`: streams, durables, and every event with its fields."""
    runnable = {name for name, _ in _process_units(ROOT)}
    out: list[str] = [
        "# Event catalogue",
        "",
        f"Generated from `contracts/` and the processes' code by `{REGENERATE}`; do not edit.",
        "The machine-readable version is [`asyncapi.yaml`](asyncapi.yaml) (AsyncAPI 3.0).",
        "",
        "An event's type is also its subject (a tick's subject adds the job name). Publishers set",
        "`Nats-Msg-Id` to the event id, so a re-published event is dropped inside the stream's",
        "duplicate window; a derived event's id is computed from the emitting consumer and the",
        "causing event, so a redelivered step publishes the same ids again.",
        "",
        "## Events",
        "",
        "| event type | subject | stream | emitted by | consumed by | description |",
        "|---|---|---|---|---|---|",
    ]
    for event_type, cls in EVENT_TYPES.items():
        subjects = list(consumed_subjects(cls)) if is_refined_subject(cls) else [cls.TYPE]
        terminal = " (terminal)" if cls in TERMINAL_EVENTS else ""
        out.append(
            f"| [`{event_type}`](#{_anchor(event_type)}) "
            f"| {', '.join(f'`{s}`' for s in subjects)} "
            f"| {stream_for_subject(cls.TYPE).name} "
            f"| {_names(emitters().get(event_type, ()))} "
            f"| {_durable_list(consumers_of_event(cls))}{terminal} "
            f"| {_cell(_doc(cls))} |"
        )
    out += [
        "",
        "## Streams",
        "",
        "| stream | subjects | max age | description |",
        "|---|---|---|---|",
    ]
    for stream in STREAMS:
        days = stream.max_age_seconds / 86400
        out.append(
            f"| {stream.name} | {', '.join(f'`{s}`' for s in stream.subjects)} "
            f"| {days:g} d | {_cell(stream.description)} |"
        )
    out += [
        "",
        "## Durable consumers",
        "",
        "Each is shared by every replica of its process. `ack wait` is how long a delivery may",
        "stay unacknowledged (long steps send `in_progress` heartbeats); after `max deliver`",
        "attempts the message goes to the dead-letter stream on `dlq.<durable>`. A durable",
        "created for the first time (a step added by an upgrade) starts at the messages of the",
        "last `ORCH_NATS__NEW_DURABLE_LOOKBACK_SECONDS` (10 minutes), not at the start of the",
        "stream; an existing durable keeps where it started.",
        "",
        "| durable | process | stream | subjects | ack wait | max deliver | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in CONSUMERS:
        process = spec.process if spec.process in runnable else f"{spec.process} (no process yet)"
        out.append(
            f"| `{spec.durable}` | {process} | {spec.stream.name} "
            f"| {', '.join(f'`{s}`' for s in spec.subjects)} "
            f"| {spec.ack_wait_seconds:g} s | {spec.max_deliver} | {_cell(spec.description)} |"
        )
    out += [
        "",
        "## Envelope",
        "",
        "Every event starts with these fields.",
        "",
        *_field_rows(Event.model_fields),
    ]
    for event_type, cls in EVENT_TYPES.items():
        out += [
            "",
            f"## `{event_type}`",
            "",
            f"`{cls.__name__}`, schema version {cls.SCHEMA_VERSION}. {_doc(cls)}",
            "",
        ]
        if cls in TERMINAL_EVENTS:
            out += [f"No durable consumes it: {TERMINAL_EVENTS[cls]}", ""]
        out += _field_rows(_payload_fields(cls))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infra.catalogue",
        description="Print the AsyncAPI event catalogue (default) or write both catalogue files.",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print docs/events.md instead of the AsyncAPI"
    )
    parser.add_argument(
        "--write", action="store_true", help=f"write {ASYNCAPI_FILE.name} and {EVENTS_FILE.name}"
    )
    args = parser.parse_args(argv)
    if args.write:
        DOCS.mkdir(exist_ok=True)
        ASYNCAPI_FILE.write_text(render_asyncapi(), encoding="utf-8")
        EVENTS_FILE.write_text(render_events_markdown(), encoding="utf-8")
        print(f"wrote {ASYNCAPI_FILE.relative_to(ROOT)} and {EVENTS_FILE.relative_to(ROOT)}")
        return
    sys.stdout.write(render_events_markdown() if args.markdown else render_asyncapi())


if __name__ == "__main__":
    main()
