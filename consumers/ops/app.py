"""Composition root of the ops process."""

from __future__ import annotations

from infra.bus.runtime import ConsumerApp
from infra.settings import Settings, get_settings
from infra.vault import VaultClient

from .handlers import OpsPorts, register
from .http_probe import HttpHealthProbe
from .server_health import ServerKeys, ServerProbe, SshServerProbe
from .service import HealthProbe
from .settings import OpsSettings


def build_app(
    settings: Settings | None = None,
    *,
    probe: HealthProbe | None = None,
    server_probe: ServerProbe | None = None,
    keys: ServerKeys | None = None,
    ops_settings: OpsSettings | None = None,
) -> ConsumerApp:
    """The ops process; tests pass their own probes, key source or thresholds."""
    settings = settings or get_settings()
    app = ConsumerApp("ops", settings=settings)
    if keys is None:
        # Reads servers/<name> (its policy allows nothing else); a token that expires is
        # renewed by logging in again on the next 403 (`VaultClient._call_logged_in`).
        vault = VaultClient.from_settings(settings.vault)
        app.on_startup.append(vault.login)
        keys = vault
    register(
        app,
        OpsPorts(
            probe=probe or HttpHealthProbe(),
            server_probe=server_probe or SshServerProbe(),
            keys=keys,
            thresholds=(ops_settings or OpsSettings()).thresholds(),
        ),
    )
    return app


def main() -> None:
    build_app().run()
