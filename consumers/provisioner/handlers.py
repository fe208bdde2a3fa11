"""Thin handlers: translate the provisioner's two triggers into service calls and outcome events."""

from __future__ import annotations

from contracts import events as ev
from infra.bus.runtime import ConsumerApp, StepContext

from .service import NoCapacityError, ProvisionerService


async def on_provision_requested(
    ctx: StepContext, event: ev.ProvisionRequested
) -> ev.ResourcesAllocated | ev.ProvisioningFailed:
    """The coordinator needs a server and port for a specified project.

    A full inventory is an outcome, not a crash: the coordinator records the failure and the
    operator reads in the timeline which labels are missing and how to add a server.
    """
    try:
        allocation = await ProvisionerService(ctx.session).allocate(event.project_id, event.labels)
    except NoCapacityError as exc:
        ctx.log.warning("provision.no_capacity", labels=list(exc.labels))
        return event.derive(
            ev.ProvisioningFailed, actor=ctx.consumer, project_id=event.project_id, reason=str(exc)
        )
    ctx.log.info("provision.allocated", server=allocation.server_name, port=allocation.port)
    return event.derive(
        ev.ResourcesAllocated,
        actor=ctx.consumer,
        project_id=event.project_id,
        server_name=allocation.server_name,
        host=allocation.host,
        port=allocation.port,
    )


async def on_project_archived(
    ctx: StepContext, event: ev.ProjectArchived
) -> ev.ResourcesReleased | None:
    """An archived project gives its port back; one that never got one emits nothing."""
    released = await ProvisionerService(ctx.session).release(event.project_id)
    if released is None:
        return None
    ctx.log.info("provision.released", server=released.server_name, port=released.port)
    return event.derive(
        ev.ResourcesReleased,
        actor=ctx.consumer,
        project_id=event.project_id,
        server_name=released.server_name,
        port=released.port,
    )


def register(app: ConsumerApp) -> None:
    app.handles(ev.ProvisionRequested)(on_provision_requested)
    app.handles(ev.ProjectArchived)(on_project_archived)
