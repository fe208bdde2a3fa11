"""How a project and its timeline print: lines for a person, objects for a script.

`orchestrator status` prints a whole project; `--follow` prints its timeline entry by entry and,
once the project settles, what it ended in. Both print the same lines and the same objects.
"""

from __future__ import annotations

from producers.read_model import ProjectView, TimelineEntry


def entry_line(t: TimelineEntry) -> str:
    return f"  {t.occurred_at:%Y-%m-%d %H:%M:%S}  {t.actor:<16} {t.event_type:<32} {t.summary}"


def entry_object(t: TimelineEntry) -> dict[str, object]:
    return {
        "at": t.occurred_at.isoformat(),
        "type": t.event_type,
        "actor": t.actor,
        "state": t.state,
        "summary": t.summary,
    }


def header_line(view: ProjectView) -> str:
    return f"project  {view.id}  {view.name or '(unnamed yet)'}"


def state_lines(view: ProjectView) -> list[str]:
    """State, URL, error and each secret the deploy waits for, with the command that stores it."""
    lines = [f"state    {view.state}" + ("  [offline mode]" if view.offline else "")]
    if view.url:
        lines.append(f"url      {view.url}")
    if view.error:
        lines.append(f"error    {view.error}")
    project_ref = view.slug or str(view.id)
    for name in view.missing_secrets:
        lines.append(
            f'waits    {name}: printf %s "$VALUE" | orchestrator secrets set {project_ref} {name}'
        )
    return lines


def project_object(view: ProjectView) -> dict[str, object]:
    return {
        "id": str(view.id),
        "flow_id": str(view.flow_id),
        "name": view.name,
        "slug": view.slug,
        "state": view.state,
        "url": view.url,
        "error": view.error,
        "offline": view.offline,
        "missing_secrets": list(view.missing_secrets),
        "timeline": [entry_object(t) for t in view.timeline],
    }
