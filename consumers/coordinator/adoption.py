"""Naming an adopted project: its slug comes from the repository's name.

The slug names the project's repository on the git host and its deploy directory. When the
repository adopted already lives where the project's repository would be created (the local
forge, or the GitHub owner the system creates repositories under), the project id's first
characters are appended, so importing never writes into the repository it came from.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from infra.repo_urls import ForgeSettings

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def repository_name(url: str) -> str:
    """`notes` for `git://host/notes.git` or `https://github.com/acme/notes`."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


def adopted_slug(url: str, project_id: uuid.UUID, forge: ForgeSettings) -> str:
    """A slug (`SLUG_PATTERN`) for the project adopting `url`."""
    base = _NOT_SLUG.sub("-", repository_name(url).lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"repo-{base}".rstrip("-")
    base = base[:43].rstrip("-")
    if len(base) < 3:
        base = f"{base}-app"
    owner = next(s for s in urlsplit(url).path.split("/") if s).lower()
    on_own_host = forge.host == "local" or owner == forge.github_owner.lower()
    return f"{base}-{project_id.hex[:6]}" if on_own_host else base
