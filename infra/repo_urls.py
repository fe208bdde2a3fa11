"""Is a clone URL on the git host this deployment creates repositories on?

A forged `project.repo.created` or `deploy.requested` could point a victim's project at an
attacker's repository, whose code would then run with the victim's secrets. The contracts check
a URL's shape only; whether it belongs to the configured forge is a deployment fact, so every
step that clones or records a URL (the coordinator, the deployer, the engineer) checks it here
before acting on it.

The git host is configured for the repo consumer with `ORCH_REPO_*` (see
`consumers/repo/settings.py`); `ForgeSettings` reads the same variables, so every process of
one deployment agrees on it without importing another consumer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.fields import check_clone_url_shape

_DEFAULT_PORTS = {"git": 9418, "https": 443, "ssh": 22, "http": 80}


class ForeignCloneUrl(ValueError):
    """The URL is well-formed but not on the configured git host (or not a URL at all)."""


class ForgeSettings(BaseSettings):
    """The git host repositories live on: the embedded forge or one GitHub owner."""

    model_config = SettingsConfigDict(env_prefix="ORCH_REPO_", extra="ignore")

    host: Literal["local", "github"] = Field(
        "local", description="local: bare repositories served by git daemon; github: GitHub"
    )
    daemon_url: str = Field(
        "git://127.0.0.1:9418", description="git daemon URL serving the local forge"
    )
    local_base: Path | None = Field(
        None,
        description="Directory of the local forge's bare repositories; when set, "
        "file://<local_base>/<name>.git URLs are on the forge too",
    )
    github_owner: str = Field("", description="Organization or user that owns the repositories")
    github_api_url: str = Field("https://api.github.com", description="GitHub REST API base URL")


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int | None]:
    return scheme, (host or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _github_web_host(api_url: str) -> str:
    """github.com for the public API; the Enterprise host for `https://ghe.example/api/v3`."""
    host = (urlsplit(api_url).hostname or "").lower()
    return "github.com" if host == "api.github.com" else host


def check_clone_url(url: str, forge: ForgeSettings) -> str:
    """`url` unchanged if it is on `forge`; otherwise `ForeignCloneUrl` saying what was expected.

    Local forge: the git daemon's scheme, host, port and base path (`git://host:port/<name>.git`),
    or `file://<local_base>/<name>.git` when `local_base` is configured.
    GitHub: `https://<github host>/<owner>/<name>` or `ssh://git@<github host>/<owner>/<name>`.
    A `..` segment is refused in both, so a path cannot climb out of the owner or base path.
    """
    try:
        check_clone_url_shape(url)
    except ValueError as exc:
        raise ForeignCloneUrl(str(exc)) from exc
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ForeignCloneUrl(f"clone URL {url!r} has a relative path segment")
    if forge.host == "github":
        if not forge.github_owner:
            raise ForeignCloneUrl(
                "ORCH_REPO_HOST=github needs ORCH_REPO_GITHUB_OWNER to check clone URLs against"
            )
        web = _github_web_host(forge.github_api_url)
        on_host = parts.scheme in ("https", "ssh") and (parts.hostname or "").lower() == web
        owner_ok = len(segments) == 2 and segments[0].lower() == forge.github_owner.lower()
        if on_host and owner_ok:
            return url
        raise ForeignCloneUrl(
            f"clone URL {url!r} is not a repository of {forge.github_owner} on {web} "
            f"(expected https://{web}/{forge.github_owner}/<name>.git)"
        )
    if parts.scheme == "file" and forge.local_base is not None:
        base_dir = [s for s in forge.local_base.resolve().as_posix().split("/") if s]
        if not parts.netloc and segments[:-1] == base_dir:
            return url
    daemon = urlsplit(forge.daemon_url)
    base = [s for s in daemon.path.split("/") if s]
    same_origin = _origin(parts.scheme, parts.hostname, parts.port) == _origin(
        daemon.scheme, daemon.hostname, daemon.port
    )
    if same_origin and segments[: len(base)] == base and len(segments) == len(base) + 1:
        return url
    expected = f"{forge.daemon_url.rstrip('/')}/<name>.git"
    raise ForeignCloneUrl(
        f"clone URL {url!r} is not on the local forge (expected {expected}; "
        "ORCH_REPO_DAEMON_URL sets it)"
    )


def check_source_url(url: str, forge: ForgeSettings) -> str:
    """`url` unchanged if a repository to adopt may be fetched from it; else `ForeignCloneUrl`.

    Adopting reads someone's existing repository, so the owner is free but the host is not:
    the local forge's git daemon (any `<name>.git` under its base path; `file://` URLs are
    refused, they would read the machine's disk), or `https://<github host>/<owner>/<name>`
    when the forge is GitHub. Every other host, scheme and `..` segment is refused, so a door
    cannot make the repo step fetch from the internal network or the filesystem.
    """
    try:
        check_clone_url_shape(url)
    except ValueError as exc:
        raise ForeignCloneUrl(str(exc)) from exc
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") or s.startswith("-") for s in segments):
        raise ForeignCloneUrl(f"repository URL {url!r} has a relative or option-like segment")
    if parts.query or parts.fragment:
        raise ForeignCloneUrl(f"repository URL {url!r} may not carry a query or fragment")
    if forge.host == "github":
        web = _github_web_host(forge.github_api_url)
        on_host = parts.scheme == "https" and (parts.hostname or "").lower() == web
        if on_host and parts.port in (None, 443) and len(segments) == 2:
            return url
        raise ForeignCloneUrl(
            f"{url!r} is not a GitHub repository URL (expected https://{web}/<owner>/<name>)"
        )
    daemon = urlsplit(forge.daemon_url)
    base = [s for s in daemon.path.split("/") if s]
    same_origin = _origin(parts.scheme, parts.hostname, parts.port) == _origin(
        daemon.scheme, daemon.hostname, daemon.port
    )
    if same_origin and segments[: len(base)] == base and len(segments) == len(base) + 1:
        return url
    raise ForeignCloneUrl(
        f"{url!r} is not a repository on this system's git host (expected "
        f"{forge.daemon_url.rstrip('/')}/<name>.git)"
    )
