"""`POST /admin/alerts` as Alertmanager meets it: admin token only, one notification per alert and
admin with a Telegram chat, the same ids when a failed post is retried.

The whole chain (a rule firing in a real Prometheus, a real Alertmanager posting, the notifier
delivering to the fake Bot API) is tests/observability/test_alerting.py.
"""

from __future__ import annotations

from typing import Any

import httpx
from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import NotificationKind, NotificationRequested
from infra.db.models import User, UserRole, UserStatus
from tests.api.conftest import ApiUser


def payload(status: str = "firing") -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) with two alerts of one group."""

    def alert(consumer: str, fingerprint: str) -> dict[str, Any]:
        return {
            "status": status,
            "labels": {
                "alertname": "OrchestratorConsumerLagHigh",
                "severity": "warning",
                "consumer": consumer,
                "stream": "PROJECT",
            },
            "annotations": {
                "summary": f"Durable {consumer} is 500 messages behind on PROJECT",
                "description": "Scale the consumer out.",
            },
            "startsAt": "2026-11-29T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": fingerprint,
        }

    return {
        "version": "4",
        "groupKey": '{}:{alertname="OrchestratorConsumerLagHigh"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "platform",
        "groupLabels": {"alertname": "OrchestratorConsumerLagHigh"},
        "commonLabels": {"alertname": "OrchestratorConsumerLagHigh"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert("engineer", "a1b2c3d4e5f60718"), alert("repo", "0f1e2d3c4b5a6978")],
    }


async def seed_admins(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Two admins with chats, a blocked admin with one, a member with one, an admin without."""
    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                User(id="telegram:101", chat_id=101, role=UserRole.ADMIN),
                User(id="telegram:102", chat_id=102, role=UserRole.ADMIN),
                User(
                    id="telegram:103", chat_id=103, role=UserRole.ADMIN, status=UserStatus.BLOCKED
                ),
                User(id="telegram:104", chat_id=104, role=UserRole.MEMBER),
                User(id="cli:ops", role=UserRole.ADMIN),
            ]
        )


async def published(nc: Client, post: Any, count: int) -> list[NotificationRequested]:
    """The notifications that reach the NOTIFY stream while `post` runs."""
    sub = await nc.jetstream().subscribe(
        NotificationRequested.TYPE, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )
    try:
        await post()
        events = []
        for _ in range(count):
            msg = await sub.next_msg(timeout=10)
            events.append(NotificationRequested.model_validate_json(msg.data))
        return events
    finally:
        await sub.unsubscribe()


async def test_only_an_admin_token_may_post_alerts(http: httpx.AsyncClient, alice: ApiUser) -> None:
    assert (await http.post("/admin/alerts", json=payload())).status_code == 401
    refused = await http.post("/admin/alerts", json=payload(), headers=alice.headers)
    assert refused.status_code == 403
    assert "admin token" in refused.json()["detail"]


async def test_each_alert_reaches_every_active_admin_chat_once_even_when_retried(
    http: httpx.AsyncClient,
    root: ApiUser,
    nc: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await seed_admins(sessionmaker)
    answers: list[httpx.Response] = []

    async def post() -> None:
        answers.append(await http.post("/admin/alerts", json=payload(), headers=root.headers))

    first = await published(nc, post, 4)
    assert answers[0].status_code == 200
    assert answers[0].json() == {"alerts": 2, "admins": 2, "notifications": 4}
    assert sorted((e.chat_id, e.text.splitlines()[1]) for e in first) == [
        (101, "Durable engineer is 500 messages behind on PROJECT"),
        (101, "Durable repo is 500 messages behind on PROJECT"),
        (102, "Durable engineer is 500 messages behind on PROJECT"),
        (102, "Durable repo is 500 messages behind on PROJECT"),
    ]
    assert all(e.kind is NotificationKind.FAILURE and e.project_id is None for e in first)
    assert first[0].text.startswith("Alert OrchestratorConsumerLagHigh (warning)\n")

    # Alertmanager retries a post it saw fail: the same ids, which the stream drops (each
    # publish is acknowledged before the answer, so the count is final when it arrives).
    before = (await nc.jetstream().stream_info("NOTIFY")).state.messages
    again = await http.post("/admin/alerts", json=payload(), headers=root.headers)
    assert again.json() == {"alerts": 2, "admins": 2, "notifications": 4}
    assert (await nc.jetstream().stream_info("NOTIFY")).state.messages == before

    resolved = await published(
        nc,
        lambda: http.post("/admin/alerts", json=payload("resolved"), headers=root.headers),
        4,
    )
    assert all(e.kind is NotificationKind.DONE for e in resolved)
    assert {e.text.splitlines()[0] for e in resolved} == {"Resolved: OrchestratorConsumerLagHigh"}
    assert {e.event_id for e in resolved}.isdisjoint({e.event_id for e in first})


async def test_a_body_that_is_not_alertmanagers_is_refused(
    http: httpx.AsyncClient, root: ApiUser
) -> None:
    answer = await http.post("/admin/alerts", json={"text": "hi"}, headers=root.headers)
    assert answer.status_code == 422
