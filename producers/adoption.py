"""Building an adoption intent the same way at every door (bot, API, CLI).

Every door answers a bad repository URL at once, with what a good one looks like, instead of
letting the coordinator refuse it later: the URL must be on the configured git host
(`infra.repo_urls.check_source_url`, applied again by the coordinator and the repo step) and
may not carry a credential (a token pasted into a URL is refused like one pasted into a
description, with how to store it instead).
"""

from __future__ import annotations

import uuid

from contracts.events import ProjectAdoptRequested
from infra.repo_urls import ForeignCloneUrl, ForgeSettings, check_source_url
from producers.credential_scan import refuse_credentials
from producers.intents import Source

MAX_URL = 2000


class BadRepositoryUrl(ValueError):
    """The URL cannot be adopted; the message says why and what is accepted."""


def adopt_request(
    url: str,
    *,
    user_id: str,
    source: Source,
    forge: ForgeSettings,
    how_to_store: str,
    chat_id: int | None = None,
) -> ProjectAdoptRequested:
    """A new adopted project (its ids chosen here), or `BadRepositoryUrl` / `CredentialInText`."""
    url = url.strip()
    if not url:
        raise BadRepositoryUrl("give the git URL of the repository to adopt")
    if len(url) > MAX_URL:
        raise BadRepositoryUrl(f"a repository URL has at most {MAX_URL} characters")
    refuse_credentials(url, how_to_store=how_to_store)
    try:
        check_source_url(url, forge)
    except ForeignCloneUrl as exc:
        raise BadRepositoryUrl(f"cannot adopt this repository: {exc}") from exc
    flow_id = uuid.uuid4()
    return ProjectAdoptRequested(
        correlation_id=flow_id,
        actor=user_id,
        project_id=uuid.uuid4(),
        repository_url=url,
        user_id=user_id,
        chat_id=chat_id,
        source=source,
    )
