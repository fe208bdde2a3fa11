"""The notifier's one handler: every NotificationRequested is delivered, nothing is emitted.

Redelivery is harmless: the runtime's inbox drops a notification that was already handled,
and a progress edit to the same text counts as done.
"""

from __future__ import annotations

from collections.abc import Callable

from consumers.notifier.progress_store import SqlProgressStore
from consumers.notifier.service import Notifier
from contracts.events import NotificationRequested
from infra.bus.runtime import ConsumerApp, StepContext


def register(app: ConsumerApp, notifier: Callable[[], Notifier]) -> None:
    """Attach the handler; `notifier` gives the one built at startup (after reading Vault)."""

    @app.handles(NotificationRequested)
    async def on_notification(ctx: StepContext, event: NotificationRequested) -> None:
        delivery = await notifier().deliver(event, SqlProgressStore(ctx.session))
        ctx.log.info(
            "notification.delivered",
            kind=event.kind.value,
            channel=delivery.channel,
            action=delivery.action,
            message_id=delivery.message_id,
        )
