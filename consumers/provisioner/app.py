"""Composition root of the provisioner process: its only dependency is the database."""

from __future__ import annotations

from infra.bus.runtime import ConsumerApp
from infra.settings import Settings, get_settings

from .handlers import register


def build_app(settings: Settings | None = None) -> ConsumerApp:
    app = ConsumerApp("provisioner", settings=settings or get_settings())
    register(app)
    return app


def main() -> None:
    build_app().run()
