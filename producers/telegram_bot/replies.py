"""What the bot says: every user-facing text in one place, plain text (no parse mode)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from producers.read_model import ProjectView

MAX_DESCRIPTION = 8000

COMMANDS: tuple[tuple[str, str], ...] = (
    ("new", "Start a project: /new <description>"),
    ("answer", "Answer a question: /answer <project> <text>"),
    ("status", "State and timeline: /status [project]"),
    ("projects", "Your projects"),
    ("help", "What I do"),
)

START = (
    "Hi! Describe the service you want and I will build it: I write a spec (asking you "
    "if something is unclear), reserve a server and a port, create the repository, generate "
    "and test the code, deploy it, and report every step here.\n\n"
    "Just send a description, for example:\n"
    "  A todo list API with users and due dates\n\n"
    + "\n".join(f"/{name} - {hint}" for name, hint in COMMANDS)
)

NOT_TEXT = "I read text only: please describe your project in words."
NEW_USAGE = "Usage: /new <description>, e.g. /new a URL shortener with click statistics"
ANSWER_USAGE = "Usage: /answer <project> <text>, or reply to my question."
BUSY = "Sorry, I could not take that right now. Please send it again in a minute."
NO_PROJECTS = "You have no projects yet. Send me a description to start one."


def too_long(length: int) -> str:
    return (
        f"That message has {length} characters; please keep a description under "
        f"{MAX_DESCRIPTION} characters."
    )


def unknown_command(command: str) -> str:
    known = "\n".join(f"/{name} - {hint}" for name, hint in COMMANDS)
    return f"I don't know {command}. These are my commands:\n{known}"


def accepted(project_id: uuid.UUID) -> str:
    return f"Project {project_id} accepted, I'll report progress here."


def answered(project: ProjectView) -> str:
    return f"Thanks! Your answer went to project {_label(project)}; I'll continue from there."


def no_question(project: ProjectView) -> str:
    return f"Project {_label(project)} has no open question (it is {project.state})."


def unknown_project(ref: str) -> str:
    return f"I know no project of yours matching {ref!r}. /projects lists them."


def status(project: ProjectView) -> str:
    lines = [f"Project {_label(project)}", f"State: {project.state}"]
    if project.url:
        lines.append(f"URL: {project.url}")
    if project.error:
        lines.append(f"Error: {project.error}")
    if project.offline:
        lines.append("Mode: offline (no LLM provider configured)")
    if project.timeline:
        lines.append("")
        lines.append("Timeline:")
        lines.extend(
            f"{entry.occurred_at:%Y-%m-%d %H:%M} {entry.summary or entry.event_type}"
            for entry in project.timeline
        )
    return _fit("\n".join(lines))


def project_list(projects: Sequence[ProjectView]) -> str:
    if not projects:
        return NO_PROJECTS
    lines = ["Your projects:"]
    lines.extend(
        f"{p.created_at:%Y-%m-%d} {_label(p)}: {p.state}" + (f" {p.url}" if p.url else "")
        for p in projects
    )
    return _fit("\n".join(lines))


def _label(project: ProjectView) -> str:
    name = project.name or project.slug
    return f"{name} ({str(project.id)[:8]})" if name else str(project.id)


def _fit(text: str, limit: int = 4096) -> str:
    # Long timelines keep their newest entries: those are what the user asks about.
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :]
