"""GitHubHost against recorded GitHub API responses served by a fake API server.

The fake's repositories are bare repositories on the session's git daemon, so the whole step
(API calls, then fetch and push) runs for real; only GitHub's HTTPS git server is not covered.
"""

from __future__ import annotations

import base64
import uuid

import pytest

from consumers.repo.errors import GitHostUnavailable, RepoHostError
from consumers.repo.github_host import GitHubHost
from consumers.repo.scaffold import JinjaScaffolder
from consumers.repo.service import RepoService
from contracts.spec import ServiceKind
from infra.stack.git_daemon import GitDaemon
from infra.stack.ports import free_port
from tests.repo.conftest import GITHUB_TOKEN, git, make_spec
from tests.repo.fake_github import FORBIDDEN, RATE_LIMITED, Failure, FakeGitHub


def host_for(github: FakeGitHub, *, org: bool = True, token: str = GITHUB_TOKEN) -> GitHubHost:
    async def token_provider() -> str:
        return token

    return GitHubHost(token_provider, "acme", owner_is_org=org, api_base_url=github.base_url)


def name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


async def test_a_missing_repository_is_created_in_the_organization(github: FakeGitHub) -> None:
    repo_name = name()
    hosted = await host_for(github).ensure_repo(repo_name, "A service\nfor people")

    assert hosted.name == f"acme/{repo_name}"
    assert hosted.web_url == f"https://github.com/acme/{repo_name}"
    assert hosted.default_branch == "main"
    assert github.requests == [
        ("GET", f"/repos/acme/{repo_name}"),
        ("POST", "/orgs/acme/repos"),
    ]
    document = github.repos[f"acme/{repo_name}"]
    assert document["private"] is True
    assert document["description"] == "A service for people"


async def test_an_existing_repository_is_read_not_created(github: FakeGitHub) -> None:
    repo_name = name()
    first = await host_for(github).ensure_repo(repo_name, "")
    github.requests.clear()

    assert await host_for(github).ensure_repo(repo_name, "") == first
    assert github.requests == [("GET", f"/repos/acme/{repo_name}")]


async def test_a_personal_account_creates_under_the_user(github: FakeGitHub) -> None:
    repo_name = name()
    hosted = await host_for(github, org=False).ensure_repo(repo_name, "")
    assert ("POST", "/user/repos") in github.requests
    assert hosted.name == f"octo-user/{repo_name}"


async def test_422_already_exists_from_a_concurrent_create_is_read_back(
    github: FakeGitHub,
) -> None:
    repo_name = name()
    github.race_next_create = True

    hosted = await host_for(github).ensure_repo(repo_name, "")

    assert hosted.name == f"acme/{repo_name}"
    assert github.requests == [
        ("GET", f"/repos/acme/{repo_name}"),
        ("POST", "/orgs/acme/repos"),
        ("GET", f"/repos/acme/{repo_name}"),
    ]


async def test_bad_credentials_are_a_refusal_with_githubs_message(github: FakeGitHub) -> None:
    with pytest.raises(RepoHostError, match="HTTP 401: Bad credentials"):
        await host_for(github, token="ghp_revoked").ensure_repo(name(), "")


async def test_a_forbidden_create_is_a_refusal(github: FakeGitHub) -> None:
    host = host_for(github)
    repo_name = name()
    await host.ensure_repo(repo_name, "")  # warm up: the GET path works
    github.fail_next = Failure(403, FORBIDDEN)

    with pytest.raises(RepoHostError, match="Resource not accessible by personal access token"):
        await host.ensure_repo(name(), "")


async def test_a_rate_limit_or_server_error_is_worth_retrying(github: FakeGitHub) -> None:
    github.fail_next = Failure(
        403, RATE_LIMITED, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}
    )
    with pytest.raises(GitHostUnavailable, match="API rate limit exceeded"):
        await host_for(github).ensure_repo(name(), "")

    github.fail_next = Failure(502, {"message": "Server Error"})
    with pytest.raises(GitHostUnavailable, match="HTTP 502"):
        await host_for(github).ensure_repo(name(), "")


async def test_an_unreachable_api_is_worth_retrying() -> None:
    async def token_provider() -> str:
        return GITHUB_TOKEN

    host = GitHubHost(
        token_provider, "acme", owner_is_org=True, api_base_url=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(GitHostUnavailable, match="could not be reached"):
        await host.ensure_repo(name(), "")


async def test_git_credentials_travel_as_a_header_in_config_never_in_the_url(
    github: FakeGitHub,
) -> None:
    config = await host_for(github).git_auth_config()
    header = config["http.extraHeader"]
    assert header.startswith("Authorization: Basic ")
    assert base64.b64decode(header.split()[-1]).decode() == f"x-access-token:{GITHUB_TOKEN}"
    hosted = await host_for(github).ensure_repo(name(), "")
    assert GITHUB_TOKEN not in hosted.clone_url


async def test_the_step_on_github_creates_pushes_and_converges(
    github: FakeGitHub, git_daemon: GitDaemon
) -> None:
    service = RepoService(host_for(github), JinjaScaffolder())
    spec = make_spec(ServiceKind.HTTP)
    project_id = uuid.uuid4()

    created = await service.create(spec, project_id)
    again = await service.create(spec, project_id)

    assert created == again
    assert created.repo_name == f"acme/{spec.slug}"
    assert created.web_url == f"https://github.com/acme/{spec.slug}"
    assert git("rev-parse", "main", cwd=git_daemon.path_for(spec.slug)) == created.commit
    assert GITHUB_TOKEN not in repr(created)


@pytest.mark.parametrize("org", [True, False])
async def test_list_repos_reads_every_page_of_the_owner(github: FakeGitHub, org: bool) -> None:
    async def token_provider() -> str:
        return GITHUB_TOKEN

    # Two per page: three repositories come over two pages.
    host = GitHubHost(
        token_provider, "acme", owner_is_org=org, api_base_url=github.base_url, list_page_size=2
    )
    names = sorted(name() for _ in range(3))
    for repo in names:
        await host.ensure_repo(repo, "listed")
    listed = await host.list_repos()
    owner = "acme" if org else "octo-user"
    assert [r.name for r in listed] == [f"{owner}/{n}" for n in names]
    assert all(r.clone_url == github.clone_url_for(r.name.split("/")[1]) for r in listed)
    path = "/orgs/acme/repos" if org else "/user/repos"
    assert [p for m, p in github.requests if m == "GET" and p == path] == [path, path]
