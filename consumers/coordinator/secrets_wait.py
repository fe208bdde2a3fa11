"""What a person reads while a deploy waits for secrets: which ones, and how to store each.

A deploy that lacks a required secret does not fail: the project waits in `awaiting_secrets`
and resumes when the last missing one is stored. Each message names every missing secret and
the three ways to store it (the bot, the CLI, the API), so the owner can act from wherever they
are. Only names appear here; a value never reaches the coordinator.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.db.models import Project


def _ref(project: Project) -> str:
    return project.slug or str(project.id)


def how_to_store(project: Project, name: str) -> str:
    """The three doors for one secret; the value goes to Vault only."""
    ref = _ref(project)
    return (
        f"• {name}: in this chat /secret {name} {ref} ; "
        f'CLI: printf %s "$VALUE" | orchestrator secrets set {ref} {name} ; '
        f'API: PUT /projects/{project.id}/secrets/{name} with body {{"value": "..."}}'
    )


def waiting_message(project: Project, missing: Sequence[str]) -> str:
    """The chat message when the deploy starts waiting."""
    title = project.name or "The project"
    lines = [
        f"{title} needs {len(missing)} secret(s) before it can go live: {', '.join(missing)}.",
        "Store each one (the value goes to Vault only, never into a chat log or the database):",
        *(how_to_store(project, name) for name in missing),
        "The deploy resumes by itself when the last one is stored.",
    ]
    return "\n".join(lines)


def still_waiting_message(project: Project, stored: str, missing: Sequence[str]) -> str:
    """The chat message when one secret arrived and others are still missing."""
    return "\n".join(
        [
            f"{stored} stored. Still missing: {', '.join(missing)}.",
            *(how_to_store(project, name) for name in missing),
        ]
    )


def waiting_summary(missing: Sequence[str]) -> str:
    """The timeline entry: names only."""
    return f"deploy waits for secrets: {', '.join(missing)}"


def live_release_needs_secrets(missing: Sequence[str]) -> str:
    """A new release of a live project lacks secrets; the live release keeps serving."""
    return (
        f"The new release was not deployed: it needs {', '.join(missing)}, which Vault does not "
        "hold. The previous release is still serving. Store the secret(s), then deploy again."
    )
