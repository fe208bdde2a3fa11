"""What the bot says: every user-facing text in one place, plain text (no parse mode)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from producers.read_model import ProjectView

MAX_DESCRIPTION = 8000

COMMANDS: tuple[tuple[str, str], ...] = (
    ("new", "Start a project: /new <description>"),
    ("adopt", "Deploy an existing repository: /adopt <git url>"),
    ("answer", "Answer a question: /answer <project> <text>"),
    ("status", "State and timeline: /status [project]"),
    ("projects", "Your projects"),
    ("secret", "Store a secret your service needs: /secret NAME [project]"),
    ("redeploy", "Deploy a live project again: /redeploy <project>"),
    ("restart", "Restart a live project's service: /restart <project>"),
    ("rollback", "Serve a live project's previous release again: /rollback <project>"),
    ("retry", "Resume a failed project where it failed: /retry <project>"),
    ("change", "Change a live service: /change <project> <text>, or reply to its /status"),
    ("cancel", "Stop waiting for a secret value"),
    ("help", "What I do"),
)

ADMIN_COMMANDS: tuple[tuple[str, str], ...] = (
    ("allow", "Let someone in: /allow <telegram id> [admin]"),
    ("block", "Refuse someone from now on: /block <telegram id>"),
    ("unblock", "Let a blocked person back in: /unblock <telegram id>"),
    ("invite", "A one-time invite link: /invite [admin]"),
    ("users", "Everyone who may use the bot"),
    ("servers", "The deploy servers and their ports"),
    ("incidents", "Open incidents"),
    ("dlq", "Dead letters"),
    ("lag", "Consumer lag"),
)

START = (
    "Hi! Describe the service you want and I will build it: I write a spec (asking you "
    "if something is unclear), reserve a server and a port, create the repository, generate "
    "and test the code, deploy it, and report every step here.\n\n"
    "Just send a description, for example:\n"
    "  A todo list API with users and due dates\n\n"
    + "\n".join(f"/{name} - {hint}" for name, hint in COMMANDS)
)

ADMIN_HELP = "Admin commands:\n" + "\n".join(f"/{name} - {hint}" for name, hint in ADMIN_COMMANDS)
WELCOME = "Welcome! Your invite is accepted: you can use this bot now."
GROUP_REFUSED = (
    "Sorry, I work in private chats only (statuses and questions are personal). "
    "Please write to me directly."
)
SHARED_SENDER_REFUSED = (
    "Sorry, I cannot tell who you are: anonymous group admins and messages sent on behalf "
    "of a channel share one Telegram identity. Please write to me from your own account "
    "in a private chat."
)
VALUE_USAGE = (
    "Usage: /secret NAME [project], e.g. /secret TELEGRAM_BOT_TOKEN. I then ask for the value; "
    "I delete your message with it and keep it only in the secret store."
)
NOTHING_PENDING = "I was not waiting for a secret."
CANCELLED = "OK, I am no longer waiting for a secret."
ALLOW_USAGE = "Usage: /allow <telegram id> [admin]"
STATUS_USAGE = "Usage: /block <telegram id> or /unblock <telegram id>"
NOT_TEXT = "I read text only: please describe your project in words."
NEW_USAGE = "Usage: /new <description>, e.g. /new a URL shortener with click statistics"
ANSWER_USAGE = "Usage: /answer <project> <text>, or reply to my question."
CHANGE_USAGE = (
    "Usage: /change <project> <what to change>, e.g. /change expense-api add contacts; or "
    "reply to the project's /status card with the change."
)
ADOPT_USAGE = (
    "Usage: /adopt <git url>, e.g. /adopt git://127.0.0.1:9418/notes.git: I read the "
    "repository, run its tests, ask for the secrets it needs and deploy it."
)
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


def adopt_accepted(project_id: uuid.UUID, url: str) -> str:
    return (
        f"Project {project_id}: adopting {url}. I'll read it, run its tests and report "
        "progress here; if it needs secrets I'll ask for them."
    )


def adopt_refused(reason: str) -> str:
    return f"I can't adopt that: {reason}\n\n{ADOPT_USAGE}"


def answered(project: ProjectView) -> str:
    return f"Thanks! Your answer went to project {_label(project)}; I'll continue from there."


def change_accepted(project: ProjectView) -> str:
    return (
        f"Change sent to project {_label(project)}: I'll write the next revision of its spec "
        "and report each step here. The current release keeps serving until the new one is live."
    )


def change_refused(project: ProjectView, reason: str) -> str:
    return f"I can't change project {_label(project)} now: {reason}."


def no_question(project: ProjectView) -> str:
    return f"Project {_label(project)} has no open question (it is {project.state})."


def operation_usage(operation: str) -> str:
    return f"Which project? /{operation} <project> (its name, slug or id; /projects lists them)."


def operation_requested(operation: str, project: ProjectView) -> str:
    return f"{operation.capitalize()} of project {_label(project)} requested; I'll report here."


def operation_refused(reason: str) -> str:
    return f"Not possible: {reason}."


def unknown_project(ref: str) -> str:
    return f"I know no project of yours matching {ref!r}. /projects lists them."


def status(project: ProjectView) -> str:
    # The full id is on the card: a reply to it names the project (a change request).
    lines = [f"Project {_label(project)}", f"Id: {project.id}", f"State: {project.state}"]
    if project.url:
        lines.append(f"URL: {project.url}")
    if project.error:
        lines.append(f"Error: {project.error}")
    if project.missing_secrets:
        lines.append(awaiting_secrets(project.missing_secrets))
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


def unknown_sender(telegram_id: int) -> str:
    return (
        "Sorry, this bot serves invited people only. To get access, send your Telegram id "
        f"{telegram_id} to an admin of this bot, or open an invite link from them."
    )


def blocked_sender(telegram_id: int) -> str:
    return (
        "Sorry, your access to this bot is suspended. If you think this is a mistake, ask an "
        f"admin of this bot and give them your Telegram id {telegram_id}."
    )


def rate_limited(retry_after: int) -> str:
    return (
        f"You are sending faster than this bot serves one person. Nothing was done with this "
        f"message; send it again in {retry_after} s."
    )


def credential_refused(kinds: str) -> str:
    return (
        f"I did not send that: it looks like it contains a credential ({kinds}). Descriptions "
        "and answers are stored and read by the language model, so I deleted your message. "
        "Send it again without the value, and store the value with /secret NAME: I keep it "
        "only in the secret store."
    )


def ask_secret(name: str, project: ProjectView, minutes: int) -> str:
    return (
        f"Send the value of {name} for project {_label(project)} as your next message "
        f"(within {minutes} minutes). I will store it in the secret store and delete your "
        "message. /cancel stops."
    )


def secret_stored(name: str, project: ProjectView | None, project_id: uuid.UUID) -> str:
    where = _label(project) if project is not None else str(project_id)
    return (
        f"Stored {name} for project {where} and deleted your message; "
        "the project picks it up at its next deploy."
    )


def secret_not_deleted(name: str) -> str:
    return (
        f"I stored {name}, but could not delete your message with the value: please delete "
        "it yourself."
    )


STORE_FAILED = (
    "I could not store that secret right now; your message is deleted. Please try /secret "
    "again in a minute."
)


def invite_link(bot_username: str, code: str, hours: int, role: str) -> str:
    return (
        f"A one-time invite ({role}), valid for {hours} hours:\n"
        f"https://t.me/{bot_username}?start={code}\n"
        "It works once; send it only to the person you mean."
    )


def allowed(user_id: str, role: str) -> str:
    return f"{user_id} may use the bot now, as {role}."


def status_changed(user_id: str, status: str) -> str:
    return f"{user_id} is {status} now."


def project_list_all(projects: Sequence[ProjectView]) -> str:
    if not projects:
        return "Nobody has projects yet."
    lines = ["All projects:"]
    lines.extend(
        f"{p.created_at:%Y-%m-%d} {_label(p)}: {p.state} ({p.user_id})"
        + (f" {p.url}" if p.url else "")
        for p in projects
    )
    return _fit("\n".join(lines))


def awaiting_secrets(names: Sequence[str]) -> str:
    """The status line of a deploy waiting in `awaiting_secrets`."""
    return (
        "The deploy waits for: " + ", ".join(names) + ". Send each with /secret NAME; "
        "it resumes by itself when the last one is stored."
    )


def missing_secrets(names: Sequence[str]) -> str:
    return "Missing secrets: " + ", ".join(names) + " (tap one to send its value)"
