"""A fake GitHub REST API serving the repository endpoints the repo step uses.

Bodies and headers are shaped after recorded api.github.com responses (trimmed to the fields a
client reads), so githubkit parses them as it would GitHub's. The `clone_url` it hands out points
wherever the test says (the session's git daemon), so a push after the API calls is real too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from infra.stack.ports import free_port

DOCS = "https://docs.github.com/rest"

#: Recorded error bodies (api.github.com, API version 2022-11-28).
NOT_FOUND = {
    "message": "Not Found",
    "documentation_url": f"{DOCS}/repos/repos#get-a-repository",
    "status": "404",
}
BAD_CREDENTIALS = {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}
FORBIDDEN = {
    "message": "Resource not accessible by personal access token",
    "documentation_url": f"{DOCS}/repos/repos#create-an-organization-repository",
    "status": "403",
}
RATE_LIMITED = {
    "message": "API rate limit exceeded for user ID 1.",
    "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api",
    "status": "403",
}


def already_exists(url: str) -> dict[str, Any]:
    return {
        "message": "Repository creation failed.",
        "errors": [
            {
                "resource": "Repository",
                "code": "custom",
                "field": "name",
                "message": "name already exists on this account",
            }
        ],
        "documentation_url": url,
        "status": "422",
    }


@dataclass
class Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeGitHub:
    """`async with FakeGitHub(token, clone_url_for) as gh:` serves on `gh.base_url`."""

    def __init__(
        self,
        token: str,
        clone_url_for: Callable[[str], str],
        on_create: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.token = token
        self.clone_url_for = clone_url_for
        #: Called with the repository name when one is created (to back it with a git server).
        self.on_create = on_create
        self.port = free_port()
        self.repos: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        #: Answer the next request with this error instead (one-shot).
        self.fail_next: Failure | None = None
        #: Create the repository "concurrently" and answer the next POST with 422.
        self.race_next_create = False
        self._ids = itertools.count(700_000_001)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeGitHub:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/repos/{owner}/{repo}", self._get_repo)
        app.router.add_post("/orgs/{org}/repos", self._create_in_org)
        app.router.add_post("/user/repos", self._create_for_user)
        app.router.add_get("/orgs/{org}/repos", self._list_for_org)
        app.router.add_get("/user/repos", self._list_for_user)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization", "").split(" ")[-1] != self.token:
            return _json(401, BAD_CREDENTIALS)
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            return _json(failure.status, failure.body, failure.headers)
        response: web.StreamResponse = await handler(request)
        return response

    async def _get_repo(self, request: web.Request) -> web.Response:
        full_name = f"{request.match_info['owner']}/{request.match_info['repo']}"
        repo = self.repos.get(full_name)
        return _json(200, repo) if repo else _json(404, NOT_FOUND)

    async def _list_for_org(self, request: web.Request) -> web.Response:
        return self._list(request, request.match_info["org"])

    async def _list_for_user(self, request: web.Request) -> web.Response:
        return self._list(request, "octo-user")

    def _list(self, request: web.Request, owner: str) -> web.Response:
        """One page of the owner's repositories, as GitHub pages them (`page`, `per_page`)."""
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
        owned = [doc for name, doc in sorted(self.repos.items()) if name.startswith(f"{owner}/")]
        return _json(200, owned[(page - 1) * per_page : page * per_page])

    async def _create_in_org(self, request: web.Request) -> web.Response:
        return await self._create(request, request.match_info["org"], "Organization")

    async def _create_for_user(self, request: web.Request) -> web.Response:
        return await self._create(request, "octo-user", "User")

    async def _create(self, request: web.Request, owner: str, owner_type: str) -> web.Response:
        body = await request.json()
        full_name = f"{owner}/{body['name']}"
        if self.race_next_create:
            self.race_next_create = False
            self.repos[full_name] = self._document(owner, owner_type, body)
        if full_name in self.repos:
            return _json(
                422, already_exists(f"{DOCS}/repos/repos#create-an-organization-repository")
            )
        self.repos[full_name] = self._document(owner, owner_type, body)
        return _json(201, self.repos[full_name])

    def _document(self, owner: str, owner_type: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["name"]
        self.on_create(name)
        repo_id = next(self._ids)
        return {
            "id": repo_id,
            "node_id": "R_kgDOKz1x9A",
            "name": name,
            "full_name": f"{owner}/{name}",
            "private": body.get("private", False),
            "owner": {
                "login": owner,
                "id": 9_919,
                "type": owner_type,
                "html_url": f"https://github.com/{owner}",
            },
            "html_url": f"https://github.com/{owner}/{name}",
            "description": body.get("description"),
            "fork": False,
            "url": f"https://api.github.com/repos/{owner}/{name}",
            "git_url": f"git://github.com/{owner}/{name}.git",
            "ssh_url": f"git@github.com:{owner}/{name}.git",
            "clone_url": self.clone_url_for(name),
            "created_at": "2026-05-04T10:21:07Z",
            "updated_at": "2026-05-04T10:21:07Z",
            "pushed_at": "2026-05-04T10:21:07Z",
            "size": 0,
            "visibility": "private" if body.get("private") else "public",
            "default_branch": "main",
        }


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    base = {"X-GitHub-Media-Type": "github.v3; format=json", "X-RateLimit-Remaining": "4999"}
    return web.json_response(body, status=status, headers={**base, **(headers or {})})
