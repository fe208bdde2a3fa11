"""GitHub as the git host, through githubkit's REST client.

Get-or-create by name: `GET /repos/{owner}/{name}`, and on 404 `POST /orgs/{owner}/repos` (or
`/user/repos` for a personal account). A 422 "name already exists" from a concurrent create is
answered by reading the repository again, so redelivered steps converge. The token is fetched
from Vault at each use (`token_provider`), never stored on the object or put in a URL.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from githubkit import GitHub
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed

from .errors import GitHostUnavailable, RepoHostError
from .ports import HostedRepo

TokenProvider = Callable[[], Awaitable[str]]

#: GitHub rejects longer repository descriptions.
_MAX_DESCRIPTION = 350
#: Pages of repositories the reconciliation reads at most.
_MAX_PAGES = 50


class GitHubHost:
    """A `GitHost` creating repositories under `owner` (an organization or the token's user)."""

    def __init__(
        self,
        token_provider: TokenProvider,
        owner: str,
        *,
        owner_is_org: bool,
        api_base_url: str = "https://api.github.com",
        private: bool = True,
        timeout_seconds: float = 30.0,
        list_page_size: int = 100,
    ) -> None:
        self._token_provider = token_provider
        self.owner = owner
        self.owner_is_org = owner_is_org
        self.api_base_url = api_base_url
        self.private = private
        self._timeout = timeout_seconds
        #: Repositories per listed page; 100 is GitHub's maximum.
        self._page = list_page_size

    async def _client(self) -> GitHub[Any]:
        token = await self._token_provider()
        if not token:
            raise RepoHostError("no GitHub token is configured (Vault platform/github, key token)")
        # Retries belong to the message bus (nak with backoff), not to a hidden sleep inside
        # one delivery; a cache would replay the 404 we just turned into a create.
        return GitHub(
            token,
            base_url=self.api_base_url,
            auto_retry=False,
            http_cache=False,
            timeout=self._timeout,
        )

    async def ensure_repo(self, name: str, description: str) -> HostedRepo:
        github = await self._client()
        existing = await self._get(github, name)
        if existing is not None:
            return existing
        return await self._create(github, name, " ".join(description.split())[:_MAX_DESCRIPTION])

    async def _get(self, github: GitHub[Any], name: str) -> HostedRepo | None:
        try:
            response = await github.rest.repos.async_get(self.owner, name)
        except RequestFailed as exc:
            if exc.response.status_code == 404:
                return None
            raise _domain_error(exc, f"read {self.owner}/{name}") from exc
        except RequestError as exc:
            raise _unreachable(exc, f"read {self.owner}/{name}") from exc
        return _hosted(response.json())

    async def _create(self, github: GitHub[Any], name: str, description: str) -> HostedRepo:
        action = f"create {self.owner}/{name}"
        try:
            if self.owner_is_org:
                response = await github.rest.repos.async_create_in_org(
                    self.owner, name=name, description=description, private=self.private
                )
            else:
                response = await github.rest.repos.async_create_for_authenticated_user(
                    name=name, description=description, private=self.private
                )
        except RequestFailed as exc:
            if exc.response.status_code == 422 and _already_exists(exc):
                # Another delivery created it between our read and our create.
                existing = await self._get(github, name)
                if existing is not None:
                    return existing
            raise _domain_error(exc, action) from exc
        except RequestError as exc:
            raise _unreachable(exc, action) from exc
        return _hosted(response.json())

    async def list_repos(self) -> list[HostedRepo]:
        """The owner's repositories, page by page (`GET /orgs/{owner}/repos` or `/user/repos`)."""
        github = await self._client()
        found: list[HostedRepo] = []
        for page in range(1, _MAX_PAGES + 1):
            try:
                body: Any = (
                    (
                        await github.rest.repos.async_list_for_org(
                            self.owner, per_page=self._page, page=page
                        )
                    ).json()
                    if self.owner_is_org
                    else (
                        await github.rest.repos.async_list_for_authenticated_user(
                            affiliation="owner", per_page=self._page, page=page
                        )
                    ).json()
                )
            except RequestFailed as exc:
                raise _domain_error(exc, f"list the repositories of {self.owner}") from exc
            except RequestError as exc:
                raise _unreachable(exc, f"list the repositories of {self.owner}") from exc
            if not isinstance(body, list):
                raise RepoHostError("GitHub sent an unexpected repository list")
            found.extend(_hosted(item) for item in body)
            if len(body) < self._page:
                return found
        raise RepoHostError(
            f"{self.owner} has more than {self._page * _MAX_PAGES} repositories; "
            "the reconciliation reads at most that many"
        )

    async def git_auth_config(self) -> Mapping[str, str]:
        """An HTTP Basic header with the token, as GitHub documents for `x-access-token`."""
        token = await self._token_provider()
        if not token:
            raise RepoHostError("no GitHub token is configured (Vault platform/github, key token)")
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        return {"http.extraHeader": f"Authorization: Basic {basic}"}


def _hosted(body: Any) -> HostedRepo:
    try:
        return HostedRepo(
            name=str(body["full_name"]),
            clone_url=str(body["clone_url"]),
            web_url=str(body.get("html_url") or ""),
            default_branch=str(body.get("default_branch") or "main"),
        )
    except (KeyError, TypeError) as exc:
        raise RepoHostError(f"GitHub sent an unexpected repository document: {exc!r}") from exc


def _body(exc: RequestFailed) -> dict[str, Any]:
    try:
        body = exc.response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _already_exists(exc: RequestFailed) -> bool:
    errors = _body(exc).get("errors") or []
    messages = [str(error.get("message", "")) for error in errors if isinstance(error, dict)]
    return any("already exists" in message for message in messages)


def _host_message(exc: RequestFailed) -> str:
    body = _body(exc)
    details = [
        str(error.get("message") or error.get("code"))
        for error in body.get("errors") or []
        if isinstance(error, dict)
    ]
    message = str(body.get("message") or exc.response.reason_phrase)
    return f"{message} ({'; '.join(details)})" if details else message


def _domain_error(exc: RequestFailed, action: str) -> RepoHostError | GitHostUnavailable:
    """Client errors are refusals; rate limits and server errors are worth retrying."""
    status = exc.response.status_code
    text = f"GitHub could not {action}: HTTP {status}: {_host_message(exc)}"
    if isinstance(exc, RateLimitExceeded) or status == 429 or status >= 500:
        return GitHostUnavailable(text)
    return RepoHostError(text)


def _unreachable(exc: RequestError[Any], action: str) -> GitHostUnavailable:
    return GitHostUnavailable(f"GitHub could not be reached to {action}: {exc.exc!r}")
