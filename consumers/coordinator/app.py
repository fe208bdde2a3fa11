"""Composition root of the coordinator process."""

from __future__ import annotations

from infra.bus.runtime import ConsumerApp
from infra.metrics import ProjectStateCollector
from infra.settings import Settings, get_settings

from .handlers import register


def build_app(settings: Settings | None = None) -> ConsumerApp:
    settings = settings or get_settings()
    app = ConsumerApp("coordinator", settings=settings)
    register(app, offline=settings.llm.provider == "offline")

    async def export_project_states() -> None:
        # The coordinator owns the lifecycle, so it is the one that reports it.
        assert app.sessionmaker is not None
        app.collectors.append(ProjectStateCollector(app.sessionmaker))

    app.on_startup.append(export_project_states)
    return app


def main() -> None:
    build_app().run()
