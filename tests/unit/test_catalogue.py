"""The generated documentation is current, and what it says is what the code does.

`docs/asyncapi.yaml` and `docs/events.md` are rendered by `infra.catalogue`; two blocks of the
hand-written docs are rendered here from the code they describe (the coordinator's state
machine in `docs/architecture.md`, the Vault policy table in `docs/security.md`). Each test
regenerates in memory and compares; the failure says which command brings the file up to date.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from consumers.coordinator.lifecycle import TERMINAL_STATES, TRANSITIONS
from contracts.events import EVENT_TYPES
from contracts.topology import CONSUMERS
from infra.catalogue import (
    ASYNCAPI_FILE,
    EVENTS_FILE,
    REGENERATE,
    ROOT,
    asyncapi_document,
    emitters,
    render_asyncapi,
    render_events_markdown,
    scan_emitters,
    type_name,
)
from infra.db.models import ProjectState

DOCS = ROOT / "docs"
POLICIES = ROOT / "infra" / "openbao" / "policies"
UPDATE_DOCS = os.environ.get("UPDATE_DOCS") == "1"
REWRITE = "UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_catalogue.py"


# ---------------------------------------------------------------- generated files


@pytest.mark.parametrize(
    ("path", "render"),
    [(ASYNCAPI_FILE, render_asyncapi), (EVENTS_FILE, render_events_markdown)],
    ids=["asyncapi.yaml", "events.md"],
)
def test_generated_catalogue_is_current(path: Path, render: Any) -> None:
    assert path.exists(), f"{path.relative_to(ROOT)} is missing; generate it with `{REGENERATE}`"
    assert path.read_text(encoding="utf-8") == render(), (
        f"{path.relative_to(ROOT)} is stale (the contracts or an emitter changed); "
        f"regenerate it with `{REGENERATE}` and commit the result"
    )


def test_asyncapi_lists_every_event_with_its_field_descriptions() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    schemas = document["components"]["schemas"]
    for event_type, cls in EVENT_TYPES.items():
        schema = schemas[cls.__name__]
        assert schema["description"], cls
        assert set(schema["properties"]) == set(cls.model_fields), event_type
        assert all(p.get("description") for p in schema["properties"].values()), event_type
        assert event_type in document["channels"], f"no publisher channel for {event_type}"
        assert document["operations"][event_type]["action"] == "send"


def test_asyncapi_has_a_channel_per_durable_subject() -> None:
    document = asyncapi_document()
    for spec in CONSUMERS:
        for subject in spec.subjects:
            channel = document["channels"][f"{spec.durable}:{subject}"]
            assert channel["address"] == subject
            assert spec.description in channel["description"]
            assert document["operations"][f"{spec.durable}:{subject}"]["action"] == "receive"


def test_asyncapi_correlates_on_the_envelope_field() -> None:
    messages = asyncapi_document()["components"]["messages"].values()
    assert {m["correlationId"]["location"] for m in messages} == {
        "$message.payload#/correlation_id"
    }


# ---------------------------------------------------------------- who emits what


def test_emitters_are_read_from_the_code() -> None:
    found = scan_emitters()
    assert found["deploy.requested"] == ("coordinator",)
    assert found["project.spec.ready"] == ("analyst",)
    # The CLI publishes a reconcile tick of its own (`orchestrator reconcile`).
    assert found["ops.tick"] == ("cli", "scheduler")
    # Producers build intents through producers/intents.py, which itself publishes nothing.
    assert {"telegram_bot", "cli", "api"} <= set(found["intents.project.requested"])
    assert "intents" not in {name for names in found.values() for name in names}


def test_every_event_type_has_an_emitter() -> None:
    silent = sorted(set(EVENT_TYPES) - set(emitters()))
    assert not silent, (
        f"no process emits {silent}: a contract nobody publishes is dead; remove it before "
        "anyone depends on it, or build the process that emits it"
    )


def test_field_types_read_like_python() -> None:
    fields = EVENT_TYPES["notify.requested"].model_fields
    assert type_name(fields["project_id"].annotation) == "UUID | None"
    assert type_name(fields["steps"].annotation) == "tuple[StepStatus, ...]"
    source = EVENT_TYPES["intents.project.requested"].model_fields["source"]
    assert type_name(source.annotation) == "'telegram' / 'api' / 'cli' / 'console'"


# ---------------------------------------------------------------- blocks of hand-written docs


def lifecycle_mermaid() -> str:
    """The coordinator's `TRANSITIONS` as a Mermaid state diagram."""
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {ProjectState.REQUESTED.value}"]
    for source, targets in TRANSITIONS.items():
        lines += [f"    {source.value} --> {target.value}" for target in sorted(targets)]
    lines += [f"    {state.value} --> [*]" for state in sorted(TERMINAL_STATES)]
    return "\n".join([*lines, "```"])


def _policy_rules(text: str) -> list[tuple[str, str]]:
    rules = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]', text)
    return [(path, ", ".join(re.findall(r'"([^"]+)"', caps))) for path, caps in rules]


SELF_SERVICE = {("auth/token/lookup-self", "read"), ("auth/token/renew-self", "update")}


def policy_table() -> str:
    """Every process's Vault policy from infra/openbao/policies, as a Markdown table."""
    rows = ["| process | path | capabilities |", "|---|---|---|"]
    for policy in sorted(POLICIES.glob("*.hcl")):
        rules = [r for r in _policy_rules(policy.read_text()) if r not in SELF_SERVICE]
        if not rules:
            rows.append(f"| {policy.stem} | *(none)* | |")
        rows += [f"| {policy.stem} | `{path}` | {caps} |" for path, caps in rules]
    return "\n".join(rows)


def test_every_policy_lets_its_process_maintain_its_own_token() -> None:
    for policy in sorted(POLICIES.glob("*.hcl")):
        assert set(_policy_rules(policy.read_text())) >= SELF_SERVICE, policy.name


BLOCKS = [
    ("architecture.md", "lifecycle", lifecycle_mermaid),
    ("security.md", "policies", policy_table),
]


@pytest.mark.parametrize(("doc", "block", "render"), BLOCKS, ids=[b[1] for b in BLOCKS])
def test_generated_blocks_in_docs_are_current(doc: str, block: str, render: Any) -> None:
    path = DOCS / doc
    begin, end = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    text = path.read_text(encoding="utf-8")
    assert begin in text and end in text, f"docs/{doc} lost its {begin} … {end} markers"
    head, rest = text.split(begin, 1)
    current, tail = rest.split(end, 1)
    expected = f"\n{render()}\n"
    if current == expected:
        return
    if UPDATE_DOCS:
        path.write_text(f"{head}{begin}{expected}{end}{tail}", encoding="utf-8")
        return
    pytest.fail(
        f"the {block} block of docs/{doc} no longer matches the code; rewrite it with "
        f"`{REWRITE}` and check the prose around it still holds"
    )
