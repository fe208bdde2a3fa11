"""`POST /admin/alerts`: Alertmanager's webhook. Each alert becomes a chat message to every admin.

Why here: alerts must reach a person, and the platform already reaches people through the
notifier; the API is the process that already authenticates callers and may publish. The route
sits behind the admin guard, so Alertmanager calls it with an admin API token
(`orchestrator tokens create alertmanager --role admin`, read from a file by its
`http_config.authorization.credentials_file`), and it publishes one `NotificationRequested` per
alert and admin with a Telegram chat; nothing else changes.

An alert's notification id is derived from its fingerprint, its status, when it started and the
admin, so Alertmanager's retries of a failed post publish the same ids and JetStream's duplicate
window and the notifier's inbox drop the copies: an admin gets one message when an alert fires
and one when it resolves.

No `from __future__ import annotations` here: FastAPI reads the `Annotated` dependencies at
definition time.
"""

import uuid
from datetime import datetime
from typing import Annotated, Literal

import nats.errors
import structlog
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import NotificationKind, NotificationRequested
from infra.bus.publisher import Publisher
from infra.incidents import admin_chats
from producers.api.auth import Guards
from producers.api.service import Unavailable
from producers.api.tokens import Caller

ACTOR = "api"
#: Names the notification ids of alerts (uuid5), apart from every other derived id.
ALERT_NAMESPACE = uuid.UUID("6f1c8a52-4f1e-4d0b-9a51-5d7b0e8f2a11")
#: Alertmanager's `max_alerts` in infra/alertmanager/alertmanager.yml is lower than this.
MAX_ALERTS = 100
#: One chat message: Telegram takes 4096 characters; a rule's texts are far shorter.
MAX_TEXT = 3500

log = structlog.stdlib.get_logger(__name__)


class Alert(BaseModel):
    """One alert of Alertmanager's webhook payload (version 4); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"] = Field(description="firing or resolved")
    labels: dict[str, str] = Field(description="alertname, severity and the rule's labels")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="summary and description of the rule"
    )
    starts_at: datetime = Field(alias="startsAt", description="When the alert started firing")
    fingerprint: str = Field(description="Alertmanager's id of the label set", max_length=64)


class AlertNotice(BaseModel):
    """What Alertmanager posts to a webhook receiver (version 4 of its payload)."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(description="Payload version; Alertmanager sends 4", max_length=8)
    status: Literal["firing", "resolved"] = Field(description="Status of the group")
    alerts: list[Alert] = Field(description="The group's alerts", max_length=MAX_ALERTS)


class AlertsDelivered(BaseModel):
    """How many chat messages the post became."""

    alerts: int = Field(description="Alerts in the post")
    admins: int = Field(description="Admins with a Telegram chat, each told of every alert")
    notifications: int = Field(description="Notifications published to the notifier")


def render(alert: Alert) -> str:
    """The chat text: what fired, how bad, and the rule's own advice (the notifier adds ❌/✅)."""
    name = alert.labels.get("alertname", "alert")
    summary = alert.annotations.get("summary", "")
    if alert.status == "resolved":
        text = f"Resolved: {name}" + (f"\n{summary}" if summary else "")
    else:
        severity = alert.labels.get("severity", "unknown")
        description = alert.annotations.get("description", "")
        text = f"Alert {name} ({severity})" + "".join(
            f"\n{part}" for part in (summary, description) if part
        )
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def notification(alert: Alert, admin_id: str, chat_id: int) -> NotificationRequested:
    """The notification of one alert to one admin, with ids that repeat on a retried post."""
    occurrence = f"{alert.fingerprint}|{alert.starts_at.isoformat()}"
    return NotificationRequested(
        event_id=uuid.uuid5(ALERT_NAMESPACE, f"{occurrence}|{alert.status}|{admin_id}"),
        correlation_id=uuid.uuid5(ALERT_NAMESPACE, occurrence),
        actor=ACTOR,
        user_id=admin_id,
        chat_id=chat_id,
        kind=NotificationKind.FAILURE if alert.status == "firing" else NotificationKind.DONE,
        text=render(alert),
    )


def build_alerts_router(
    guards: Guards, sessionmaker: async_sessionmaker[AsyncSession], publisher: Publisher
) -> APIRouter:
    router = APIRouter(
        prefix="/admin",
        tags=["admin"],
        dependencies=[Depends(guards.admin)],
        responses={
            400: {"description": "The body is not JSON (e.g. not UTF-8)"},
            401: {"description": "Missing, unknown, expired or revoked token"},
            403: {"description": "The token is a member token; the webhook needs an admin token"},
            413: {"description": "The request body is larger than the API accepts"},
            429: {"description": "Too many requests for this token; wait `Retry-After` seconds"},
            503: {"description": "The bus did not accept the notifications; Alertmanager retries"},
        },
    )

    @router.post(
        "/alerts",
        summary="Alertmanager's webhook: tell every admin's Telegram chat about each alert",
    )
    async def receive(
        notice: AlertNotice, caller: Annotated[Caller, Depends(guards.admin)]
    ) -> AlertsDelivered:
        async with sessionmaker() as session:
            chats = await admin_chats(session)
        if not chats:
            log.warning(
                "api.alerts_without_recipient",
                alerts=len(notice.alerts),
                detail="no active admin has a Telegram chat; an admin must /start the bot",
            )
        published = 0
        for alert in notice.alerts:
            for admin_id, chat_id in chats:
                event = notification(alert, admin_id, chat_id)
                try:
                    await publisher.publish(event)
                except (nats.errors.Error, TimeoutError) as exc:
                    log.warning("api.bus_unavailable", event_type=event.TYPE, error=repr(exc))
                    raise Unavailable("the bus did not accept the alert; try again") from exc
                published += 1
        log.info(
            "api.alerts_received",
            by=caller.token_name,
            alerts=len(notice.alerts),
            notifications=published,
        )
        return AlertsDelivered(
            alerts=len(notice.alerts), admins=len(chats), notifications=published
        )

    return router
