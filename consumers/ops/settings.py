"""The ops consumer's own configuration (`ORCH_OPS__*`): the server health thresholds."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .server_health import ServerHealthThresholds


class OpsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_OPS__", extra="ignore")

    min_free_disk_mb: int = Field(
        1024, description="A server with less free space on / fails its disk check"
    )
    min_free_memory_mb: int = Field(
        128, description="A server with less MemAvailable fails its memory check"
    )
    ssh_timeout_seconds: float = Field(10.0, description="Longest one server's SSH check may take")

    def thresholds(self) -> ServerHealthThresholds:
        return ServerHealthThresholds(
            min_free_disk_mb=self.min_free_disk_mb,
            min_free_memory_mb=self.min_free_memory_mb,
            ssh_timeout_seconds=self.ssh_timeout_seconds,
        )
