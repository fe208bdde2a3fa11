"""Composition root of the ops process."""

from __future__ import annotations

from infra.bus.runtime import ConsumerApp
from infra.settings import Settings, get_settings

from .handlers import register
from .http_probe import HttpHealthProbe
from .service import HealthProbe


def build_app(settings: Settings | None = None, *, probe: HealthProbe | None = None) -> ConsumerApp:
    app = ConsumerApp("ops", settings=settings or get_settings())
    register(app, probe or HttpHealthProbe())
    return app


def main() -> None:
    build_app().run()
