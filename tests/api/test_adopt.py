"""`POST /projects/adopt` as a client meets it: a real server over JetStream and PostgreSQL.
A URL off the git host or carrying a credential is refused at once with the reason."""

from __future__ import annotations

import json

import httpx
from nats.aio.client import Client

from contracts.topology import H_MSG_ID
from tests.api.conftest import ApiUser

TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


async def test_adopting_a_forge_repository_is_published_and_answers_202(
    http: httpx.AsyncClient, alice: ApiUser, nc: Client
) -> None:
    url = "git://127.0.0.1:9418/notes.git"
    response = await http.post(
        "/projects/adopt", json={"repository_url": url}, headers=alice.headers
    )
    assert response.status_code == 202, response.text
    body = response.json()
    msg = await nc.jsm().get_last_msg("INTENTS", "intents.project.adopt")
    event = json.loads(msg.data or b"{}")
    assert event["project_id"] == body["project_id"]
    assert event["repository_url"] == url
    assert (event["user_id"], event["source"]) == (alice.user_id, "api")
    assert dict(msg.headers or {})[H_MSG_ID] == event["event_id"]
    assert response.headers["Location"].endswith(f"/projects/{body['project_id']}")


async def test_bad_repository_urls_are_refused_with_the_reason(
    http: httpx.AsyncClient, alice: ApiUser
) -> None:
    async def adopt(url: str) -> httpx.Response:
        return await http.post(
            "/projects/adopt", json={"repository_url": url}, headers=alice.headers
        )

    elsewhere = await adopt("https://evil.example/acme/notes.git")
    assert elsewhere.status_code == 422
    assert "not a repository on this system's git host" in elsewhere.json()["detail"]
    assert "git://127.0.0.1:9418/<name>.git" in elsewhere.json()["detail"]

    local_file = await adopt("file:///etc/notes.git")
    assert local_file.status_code == 422

    climbing = await adopt("git://127.0.0.1:9418/../../etc.git")
    assert climbing.status_code == 422

    with_token = await adopt(f"https://x:{TOKEN}@github.com/acme/notes.git")
    assert with_token.status_code == 422
    assert TOKEN not in with_token.text

    assert (await adopt("")).status_code == 422
    anonymous = await http.post("/projects/adopt", json={"repository_url": "git://x/y.git"})
    assert anonymous.status_code == 401
