"""What the indexer remembers of each event, as text: pure functions, no I/O.

A document's `source_id` names what it came from, so a redelivered event (or the same spec
sent again) rewrites the same point: a spec is `spec`, a revision `revision:<n>`, an answer
`answer:<i>` (or `revision:<n>:answer:<i>`), an outcome its event's id.
"""

from __future__ import annotations

import uuid

from contracts import events as ev
from contracts.envelope import Event
from contracts.spec import ProjectSpec
from infra.memory import MemoryDocument, MemoryKind

#: Enough of a failure report to find it again; a full test log would drown everything else.
MAX_OUTCOME_CHARS = 4000


def spec_text(spec: ProjectSpec) -> str:
    """The spec as a person would read it: what it is, its data, endpoints and commands."""
    lines = [f"{spec.name} ({', '.join(spec.kinds)}): {spec.summary}"]
    for entity in spec.entities:
        fields = ", ".join(f"{field.name} {field.type}" for field in entity.fields)
        lines.append(f"entity {entity.name}: {fields}")
    lines += [f"endpoint {e.method} {e.path}: {e.summary}" for e in spec.endpoints]
    lines += [f"command {c.command}: {c.description}" for c in spec.commands]
    lines += [f"config {c.name}: {c.description}" for c in spec.config]
    lines += [f"acceptance: {criterion}" for criterion in spec.acceptance_criteria]
    return "\n".join(lines)


def answers(
    user_id: str, project_id: uuid.UUID, texts: tuple[str, ...], prefix: str = ""
) -> list[MemoryDocument]:
    return [
        MemoryDocument(
            user_id=user_id,
            project_id=project_id,
            kind=MemoryKind.ANSWER,
            source_id=f"{prefix}answer:{index}",
            text=text,
        )
        for index, text in enumerate(texts)
        if text.strip()
    ]


def spec(user_id: str, event: ev.SpecReady) -> MemoryDocument:
    return MemoryDocument(
        user_id=user_id,
        project_id=event.project_id,
        kind=MemoryKind.SPEC,
        source_id="spec",
        text=spec_text(event.spec),
    )


def revision(user_id: str, event: ev.SpecRevised, change: str) -> MemoryDocument:
    heading = f"revision {event.revision}: {change or event.summary}".strip()
    if change and event.summary:
        heading += f"\n{event.summary}"
    return MemoryDocument(
        user_id=user_id,
        project_id=event.project_id,
        kind=MemoryKind.SPEC_REVISION,
        source_id=f"revision:{event.revision}",
        text=f"{heading}\n{spec_text(event.spec)}",
    )


def outcome_text(event: Event) -> str | None:
    """One line of the timeline, or None for an event that is not an outcome."""
    match event:
        case ev.SpecFailed():
            return f"spec failed: {event.reason}"
        case ev.SpecRevisionFailed():
            return f"revision {event.revision} failed: {event.reason}"
        case ev.ProvisioningFailed():
            return f"provisioning failed: {event.reason}"
        case ev.RepoFailed():
            return f"repository failed: {event.reason}"
        case ev.RepoRevisionFailed():
            return f"revision {event.revision} of the repository failed: {event.reason}"
        case ev.CodeGenerated():
            return (
                f"code generated at {event.commit[:12]} ({event.mode}, {event.tests_passed} "
                f"tests passed): {event.summary}"
            )
        case ev.CodeFailed():
            return f"code failed after {event.iterations} iterations: {event.reason}"
        case ev.DeploySucceeded():
            return f"deployed {event.commit[:12]}, live at {event.url} (release {event.release})"
        case ev.DeployFailed():
            rolled = ", previous release restored" if event.rolled_back else ""
            return f"deploy of {event.commit[:12]} failed{rolled}: {event.reason}"
        case ev.DeployRolledBack():
            return f"release {event.failed_release} failed; {event.restored_release} serves again"
        case ev.DeployAwaitingSecrets():
            return f"deploy of {event.commit[:12]} waits for secrets: {', '.join(event.missing)}"
    return None


def outcome(user_id: str, project_id: uuid.UUID, event: Event) -> MemoryDocument | None:
    text = outcome_text(event)
    if text is None:
        return None
    return MemoryDocument(
        user_id=user_id,
        project_id=project_id,
        kind=MemoryKind.OUTCOME,
        source_id=str(event.event_id),
        text=f"{event.occurred_at:%Y-%m-%d} {text}"[:MAX_OUTCOME_CHARS],
    )
