"""Composition root of the coordinator process."""

from __future__ import annotations

from infra.bus.runtime import ConsumerApp
from infra.metrics import ProjectStateCollector
from infra.repo_urls import ForgeSettings
from infra.settings import Settings, get_settings

from .handlers import register


def build_app(settings: Settings | None = None, forge: ForgeSettings | None = None) -> ConsumerApp:
    """The coordinator; `forge` (default: from `ORCH_REPO_*`) is the git host URLs must be on."""
    settings = settings or get_settings()
    app = ConsumerApp("coordinator", settings=settings)
    register(
        app,
        offline=settings.llm.provider == "offline",
        quotas=settings.quotas,
        forge=forge or ForgeSettings(),
    )

    async def export_project_states() -> None:
        # The coordinator owns the lifecycle, so it is the one that reports it.
        assert app.sessionmaker is not None
        app.collectors.append(ProjectStateCollector(app.sessionmaker))

    app.on_startup.append(export_project_states)
    return app


def main() -> None:
    build_app().run()
