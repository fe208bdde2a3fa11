"""How a project and its timeline print: lines for a person, objects for a script.

`orchestrator status` prints a whole project; `--follow` prints its timeline entry by entry and,
once the project settles, what it ended in. Both print the same lines and the same objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from infra.db.enums import ProjectState
from producers.read_model import ProjectView, TimelineEntry

from .exit_codes import ExitCode
from .json_output import document, record

Out = Callable[[str], None]

#: Where a project stops moving without someone acting, and what the follow exits with there.
SETTLED = {
    ProjectState.ACTIVE: ExitCode.OK,
    ProjectState.FAILED: ExitCode.FAILED,
    ProjectState.ARCHIVED: ExitCode.ARCHIVED,
    ProjectState.AWAITING_ANSWER: ExitCode.WAITING_FOR_YOU,
    ProjectState.AWAITING_SECRETS: ExitCode.WAITING_FOR_YOU,
}


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


def print_project(view: ProjectView, out: Out, as_json: bool) -> None:
    """`orchestrator status`: the whole project, as lines or as one JSON document."""
    if as_json:
        out(document(project_object(view)))
        return
    out(header_line(view))
    for line in state_lines(view):
        out(line)
    out("timeline")
    for t in view.timeline:
        out(entry_line(t))


def print_requested(project_id: str, flow_id: str, out: Out, as_json: bool, follow: bool) -> None:
    """What `orchestrator request` answers: the new ids (the first NDJSON line under --follow)."""
    ids = {"project_id": project_id, "flow_id": flow_id}
    if as_json:
        out(record({"kind": "request", **ids}) if follow else document(ids))
        return
    out(f"project {project_id}")
    out(f"flow    {flow_id}")
    if not follow:
        out(f"follow it with: orchestrator status {project_id} --follow")


def print_secret_names(
    project_id: uuid.UUID, stored: list[str], missing: list[str], out: Out, as_json: bool
) -> None:
    """`orchestrator secrets list`: the names Vault holds and those the deploy waits for."""
    if as_json:
        out(document({"project_id": str(project_id), "stored": stored, "missing": missing}))
        return
    if not stored and not missing:
        out(f"no secrets for project {project_id}")
        return
    width = max(len(name) for name in stored + missing)
    for name in stored:
        out(f"{name:<{width}}  stored")
    for name in missing:
        out(f"{name:<{width}}  missing: the deploy waits for it")


class TimelinePrinter:
    """What `--follow` prints, over the database or the HTTP API: each entry once (the timeline
    is re-read whole and its entries compared by value), then what the project settled in."""

    def __init__(self, out: Out, as_json: bool) -> None:
        self._out = out
        self._json = as_json
        self._seen: set[TimelineEntry] = set()

    def show(self, view: ProjectView) -> None:
        if not self._seen and not self._json:
            self._out(header_line(view))
            self._out("timeline")
        for entry in view.timeline:
            if entry not in self._seen:
                self._seen.add(entry)
                self._entry(entry)

    def _entry(self, entry: TimelineEntry) -> None:
        if self._json:
            self._out(record({"kind": "entry", **entry_object(entry)}))
        else:
            self._out(entry_line(entry))

    def settled(self, view: ProjectView, code: ExitCode) -> int:
        question = question_of(view) if view.state == ProjectState.AWAITING_ANSWER else None
        if self._json:
            self._out(
                record(
                    {
                        "kind": "settled",
                        "id": str(view.id),
                        "slug": view.slug,
                        "state": view.state,
                        "url": view.url,
                        "error": view.error,
                        "question": question,
                        "missing_secrets": list(view.missing_secrets),
                        "exit_code": int(code),
                    }
                )
            )
            return code
        for line in state_lines(view):
            self._out(line)
        if question is not None:
            self._out(f"waits    an answer to: {question}")
            self._out(f'         reply with: orchestrator answer {view.slug or view.id} "..."')
        return code

    def refused(self, project_id: uuid.UUID, entry: TimelineEntry) -> int:
        self._entry(entry)
        if self._json:
            self._out(
                record(
                    {
                        "kind": "settled",
                        "id": str(project_id),
                        "state": "refused",
                        "error": entry.summary,
                        "exit_code": int(ExitCode.FAILED),
                    }
                )
            )
        else:
            self._out(f"refused  {entry.summary}")
        return ExitCode.FAILED


def question_of(view: ProjectView) -> str | None:
    """The analyst's question, from the entry the coordinator recorded as the project started
    to wait (`question: <text>`)."""
    asked = [t for t in view.timeline if t.state == ProjectState.AWAITING_ANSWER]
    return asked[-1].summary.removeprefix("question: ") if asked else None
