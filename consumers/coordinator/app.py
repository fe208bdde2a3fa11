"""Composition root of the coordinator process."""

from __future__ import annotations

from infra.bus.runtime import ConsumerApp
from infra.settings import Settings, get_settings

from .handlers import register


def build_app(settings: Settings | None = None) -> ConsumerApp:
    settings = settings or get_settings()
    app = ConsumerApp("coordinator", settings=settings)
    register(app, offline=settings.llm.provider == "offline")
    return app


def main() -> None:
    build_app().run()
