"""Who may call what over real HTTP: the route walk, roles, the admin routes, the size and rate
limits, the credential scan and the daily project quota, against real PostgreSQL, JetStream and
OpenBao."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from nats.aio.client import Client
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.topology import CONSUMERS
from infra.bus.publisher import JetStreamPublisher
from infra.db.models import Project, ProjectState, User
from infra.settings import QuotaSettings
from infra.vault import VaultClient, project_secret_path
from producers.api.app import build_api
from producers.api.settings import ApiSettings
from producers.rate_limit import RateLimitConfigError, RateLimiter
from tests.api.conftest import ApiUser, SeedProject, served

#: Routes that answer without a token, on purpose. Anything else must answer 401 without one.
PUBLIC = {
    "/healthz",
    "/livez",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}

#: A GitHub personal access token's shape (made up): detect-secrets' GitHub detector matches it.
FAKE_GITHUB_TOKEN = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ2a4C"


def _concrete(path: str) -> str:
    """The route template with each `{param}` filled by a plausible value."""
    return re.sub(r"\{[^}]+\}", lambda m: "TODO_API" if "name" in m.group() else "todo-api", path)


def _route_table(app: FastAPI) -> list[tuple[str, set[str]]]:
    """Every route's path and methods, included routers flattened the way OpenAPI does it."""
    table: list[tuple[str, set[str]]] = []
    for context in iter_route_contexts(app.routes):
        assert context.path is not None, f"a route without a path: {context.original_route!r}"
        table.append((context.path, set(context.methods or {"GET"})))
    return table


def _protected_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, methods in _route_table(app)
        if path not in PUBLIC
        for method in sorted(methods - {"HEAD"})
    ]


async def test_every_route_outside_the_public_list_needs_a_token_and_admin_routes_an_admin(
    app: FastAPI, http: httpx.AsyncClient, alice: ApiUser, root: ApiUser, seed_project: SeedProject
) -> None:
    """Built from the app's own route table, so a route added later is walked too."""
    await seed_project(alice.user_id)
    paths = {path for path, _ in _route_table(app)}
    assert paths >= PUBLIC, f"stale public list: {PUBLIC - paths} are not routes any more"
    walked = _protected_routes(app)
    assert len(walked) >= 16  # the project, secret and admin routes at least

    for method, path in walked:
        url = _concrete(path)
        anonymous = await http.request(method, url, json={})
        assert anonymous.status_code == 401, f"{method} {path} answered {anonymous.status_code}"
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"
        if path.startswith("/admin"):
            member = await http.request(method, url, json={}, headers=alice.headers)
            assert member.status_code == 403, f"{method} {path} gave a member {member.status_code}"
            assert "need an admin token" in member.json()["detail"]
            admin = await http.request(method, url, json={}, headers=root.headers)
            assert admin.status_code not in (401, 403), f"{method} {path}: {admin.text}"

    for path in PUBLIC - {"/docs/oauth2-redirect"}:
        assert (await http.get(path)).status_code == 200, path


async def test_members_see_their_own_projects_and_admins_everyones(
    http: httpx.AsyncClient,
    alice: ApiUser,
    bob: ApiUser,
    root: ApiUser,
    seed_project: SeedProject,
) -> None:
    mine = await seed_project(alice.user_id, slug="alice-app")
    theirs = await seed_project(bob.user_id, slug="bob-app")

    listed = await http.get("/projects", headers=alice.headers)
    assert [p["slug"] for p in listed.json()["projects"]] == ["alice-app"]
    assert (await http.get("/projects/bob-app", headers=alice.headers)).status_code == 404

    everyone = await http.get("/projects", headers=root.headers)
    assert {p["slug"] for p in everyone.json()["projects"]} == {"alice-app", "bob-app"}
    detail = await http.get(f"/projects/{theirs.id}", headers=root.headers)
    assert detail.status_code == 200
    assert detail.json()["id"] == str(theirs.id)
    assert (await http.get(f"/projects/{mine.id}", headers=root.headers)).status_code == 200


async def test_admins_list_block_and_promote_users_through_the_shared_directory(
    http: httpx.AsyncClient, alice: ApiUser, root: ApiUser
) -> None:
    users = (await http.get("/admin/users", headers=root.headers)).json()["users"]
    roles = {u["id"]: (u["role"], u["status"]) for u in users}
    assert roles[root.user_id] == ("admin", "active")
    assert roles[alice.user_id] == ("member", "active")

    blocked = await http.post(f"/admin/users/{alice.user_id}/block", headers=root.headers)
    assert blocked.status_code == 200
    assert blocked.json()["status"] == "blocked"
    refused = await http.get("/projects", headers=alice.headers)
    assert refused.status_code == 401
    assert "is blocked" in refused.json()["detail"]
    await http.post(f"/admin/users/{alice.user_id}/unblock", headers=root.headers)
    assert (await http.get("/projects", headers=alice.headers)).status_code == 200

    self_block = await http.post(f"/admin/users/{root.user_id}/block", headers=root.headers)
    assert self_block.status_code == 409
    assert "cannot block yourself" in self_block.json()["detail"]
    ghost = await http.post("/admin/users/api:ghost/block", headers=root.headers)
    assert ghost.status_code == 404

    # A member token stays a member token even once its user is an admin: the role is
    # the token's, capped by the user's.
    promoted = await http.put(
        f"/admin/users/{alice.user_id}/role", json={"role": "admin"}, headers=root.headers
    )
    assert promoted.json()["role"] == "admin"
    assert (await http.get("/admin/users", headers=alice.headers)).status_code == 403


async def test_admin_reads_cover_servers_incidents_dead_letters_lag_and_budgets(
    http: httpx.AsyncClient, root: ApiUser, alice: ApiUser, seed_project: SeedProject
) -> None:
    project = await seed_project(alice.user_id)

    lag = (await http.get("/admin/lag", headers=root.headers)).json()["consumers"]
    assert [row["durable"] for row in lag] == [spec.durable for spec in CONSUMERS]
    assert all(row["error"] is None and row["pending"] is not None for row in lag)

    letters = await http.get("/admin/dead-letters", headers=root.headers)
    assert letters.status_code == 200
    assert isinstance(letters.json()["dead_letters"], list)
    assert (await http.get("/admin/servers", headers=root.headers)).json() == {"servers": []}
    assert (await http.get("/admin/incidents", headers=root.headers)).json() == {"incidents": []}

    budgets = (await http.get("/admin/budgets", headers=root.headers)).json()["budgets"]
    assert budgets[0]["project_id"] == str(project.id)
    assert budgets[0]["user_id"] == alice.user_id
    assert budgets[0]["project_spent_usd"] == 0
    assert budgets[0]["project_limit_usd"] == QuotaSettings().llm_usd_per_project
    assert budgets[0]["exhausted"] is None

    monthly = await http.put(
        f"/admin/users/{alice.user_id}/budget", json={"usd": 5.5}, headers=root.headers
    )
    assert monthly.status_code == 200
    assert (
        await http.put(
            f"/admin/projects/{project.id}/budget", json={"usd": 0}, headers=root.headers
        )
    ).status_code == 204
    budgets = (await http.get("/admin/budgets", headers=root.headers)).json()["budgets"]
    assert (budgets[0]["user_limit_month_usd"], budgets[0]["project_limit_usd"]) == (5.5, 0)
    assert "LLM budget of $0.00 for this project is spent" in budgets[0]["exhausted"]
    await http.put(f"/admin/projects/{project.id}/budget", json={"usd": None}, headers=root.headers)
    budgets = (await http.get("/admin/budgets", headers=root.headers)).json()["budgets"]
    assert budgets[0]["project_limit_usd"] == QuotaSettings().llm_usd_per_project
    missing = await http.put(
        "/admin/projects/nope-app/budget", json={"usd": 1}, headers=root.headers
    )
    assert missing.status_code == 404


async def test_secret_names_are_listed_without_values_and_secrets_can_be_deleted(
    http: httpx.AsyncClient,
    alice: ApiUser,
    bob: ApiUser,
    root: ApiUser,
    seed_project: SeedProject,
    root_vault: VaultClient,
) -> None:
    project = await seed_project(alice.user_id, slug=f"app-{uuid.uuid4().hex[:6]}")
    ref = str(project.id)
    values = {"TELEGRAM_BOT_TOKEN": "123:" + uuid.uuid4().hex, "DB_PASSWORD": uuid.uuid4().hex}
    for name, value in values.items():
        put = await http.put(
            f"/projects/{ref}/secrets/{name}", json={"value": value}, headers=alice.headers
        )
        assert put.status_code == 204

    listed = await http.get(f"/projects/{ref}/secrets", headers=alice.headers)
    assert listed.json() == {"names": ["DB_PASSWORD", "TELEGRAM_BOT_TOKEN"]}
    assert all(value not in listed.text for value in values.values())
    assert (await http.get(f"/projects/{ref}/secrets", headers=bob.headers)).status_code == 404
    assert (await http.get(f"/projects/{ref}/secrets", headers=root.headers)).status_code == 200

    gone = await http.delete(f"/projects/{ref}/secrets/DB_PASSWORD", headers=alice.headers)
    assert gone.status_code == 204
    listed = await http.get(f"/projects/{ref}/secrets", headers=alice.headers)
    assert listed.json() == {"names": ["TELEGRAM_BOT_TOKEN"]}
    assert await root_vault.list_secrets(f"projects/{ref}") == ["TELEGRAM_BOT_TOKEN"]
    assert (await root_vault.read_secret(project_secret_path(ref, "TELEGRAM_BOT_TOKEN")))[
        "value"
    ] == values["TELEGRAM_BOT_TOKEN"]

    again = await http.delete(f"/projects/{ref}/secrets/DB_PASSWORD", headers=alice.headers)
    assert again.status_code == 404
    assert "has no secret DB_PASSWORD" in again.json()["detail"]
    foreign = await http.delete(f"/projects/{ref}/secrets/TELEGRAM_BOT_TOKEN", headers=bob.headers)
    assert foreign.status_code == 404

    too_big = await http.put(
        f"/projects/{ref}/secrets/BIG", json={"value": "x" * 16385}, headers=alice.headers
    )
    assert too_big.status_code == 422


async def test_bodies_over_the_limit_get_413_before_parsing_or_authentication(
    http: httpx.AsyncClient, alice: ApiUser
) -> None:
    big = b'{"description": "' + b"a" * 70_000 + b'"}'
    declared = await http.post("/projects", content=big, headers={"Content-Type": "text/json"})
    assert declared.status_code == 413
    assert "larger than this API accepts (65536 bytes)" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the middleware counts the stream and stops it past the limit.
        yield b'{"description": "'
        for _ in range(5):
            yield b"a" * 16_384
        yield b'"}'

    streamed = await http.post(
        "/projects",
        content=chunks(),
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert "larger than this API accepts" in streamed.json()["detail"]

    small = await http.post("/projects", json={"description": "x"}, headers={})
    assert small.status_code == 401  # under the limit, the token check answers as usual


async def test_a_token_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected(
    nc: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
    api_vault: VaultClient,
    alice: ApiUser,
    bob: ApiUser,
) -> None:
    app = build_api(
        JetStreamPublisher.from_client(nc),
        sessionmaker,
        api_vault,
        jetstream=nc.jetstream(),
        settings=ApiSettings(rate_limit="3/minute"),
    )
    async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
        for _ in range(3):
            assert (await http.get("/projects", headers=alice.headers)).status_code == 200
        limited = await http.get("/projects", headers=alice.headers)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "the limit is 3/minute" in limited.json()["detail"]
        assert (await http.get("/projects", headers=bob.headers)).status_code == 200


async def _last_request_description(nc: Client) -> str | None:
    try:
        msg = await nc.jsm().get_last_msg("INTENTS", "intents.project.requested")
    except Exception:  # no request published yet in this stream
        return None
    return (msg.data or b"").decode()


async def test_a_description_carrying_a_credential_is_refused_and_not_published(
    http: httpx.AsyncClient, alice: ApiUser, nc: Client, seed_project: SeedProject
) -> None:
    marker = uuid.uuid4().hex
    refused = await http.post(
        "/projects",
        json={"description": f"a bot {marker} that uses my token {FAKE_GITHUB_TOKEN}"},
        headers=alice.headers,
    )
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "looks like it contains a credential (GitHub Token)" in detail
    assert "PUT /projects/{ref}/secrets/NAME" in detail
    assert FAKE_GITHUB_TOKEN not in refused.text
    assert marker not in (await _last_request_description(nc) or "")

    await seed_project(alice.user_id, state=ProjectState.AWAITING_ANSWER)
    answer = await http.post(
        "/projects/todo-api/answers",
        json={"answer": f"use {FAKE_GITHUB_TOKEN}"},
        headers=alice.headers,
    )
    assert answer.status_code == 422
    assert "credential" in answer.json()["detail"]


async def test_the_daily_project_quota_is_enforced_before_publishing(
    nc: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
    api_vault: VaultClient,
    alice: ApiUser,
    bob: ApiUser,
    seed_project: SeedProject,
) -> None:
    app = build_api(
        JetStreamPublisher.from_client(nc),
        sessionmaker,
        api_vault,
        jetstream=nc.jetstream(),
        quotas=QuotaSettings(projects_per_day=2),
    )
    first = await seed_project(alice.user_id, slug="one")
    await seed_project(alice.user_id, slug="two")
    async with sessionmaker() as session, session.begin():
        # The first is 23 hours old: the quota frees up in about an hour.
        await session.execute(
            update(Project)
            .where(Project.id == first.id)
            .values(created_at=datetime.now(UTC) - timedelta(hours=23))
        )
        await session.execute(update(User).where(User.id == bob.user_id).values(projects_per_day=0))
    marker = uuid.uuid4().hex
    async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
        full = await http.post(
            "/projects", json={"description": f"a third {marker}"}, headers=alice.headers
        )
        assert full.status_code == 429
        assert "daily project quota reached: 2 of 2" in full.json()["detail"]
        assert 3000 <= int(full.headers["Retry-After"]) <= 3600
        assert marker not in (await _last_request_description(nc) or "")

        none = await http.post("/projects", json={"description": "anything"}, headers=bob.headers)
        assert none.status_code == 403
        assert "daily quota is 0" in none.json()["detail"]

        async with sessionmaker() as session, session.begin():
            await session.execute(
                update(User).where(User.id == alice.user_id).values(projects_per_day=3)
            )
        allowed = await http.post(
            "/projects", json={"description": f"a third {marker}"}, headers=alice.headers
        )
        assert allowed.status_code == 202
        assert marker in (await _last_request_description(nc) or "")


@pytest.mark.parametrize(
    ("limit", "storage", "message"),
    [
        ("lots", "async+memory://", "write it as COUNT/PERIOD"),
        ("10/minute", "memory://", "is synchronous: prefix it with async+"),
        ("10/minute", "carrier-pigeon://", "unusable rate-limit storage"),
    ],
)
def test_a_misconfigured_rate_limit_says_what_is_accepted(
    limit: str, storage: str, message: str
) -> None:
    """The process refuses to start with a limit it cannot apply, rather than not limiting."""
    with pytest.raises(RateLimitConfigError, match=re.escape(message)):
        RateLimiter(limit, namespace="test", storage_uri=storage)


async def test_the_limiter_counts_each_key_apart_in_a_moving_window() -> None:
    """The module the bot uses for its per-Telegram-user limit, on its own."""
    limiter = RateLimiter("2/second", namespace="telegram-user")
    assert await limiter.hit("telegram:1") is None
    assert await limiter.hit("telegram:1") is None
    refused = await limiter.hit("telegram:1")
    assert refused is not None
    assert refused.retry_after == 1
    assert str(refused).endswith("try again in 1 s")
    assert await limiter.hit("telegram:2") is None
