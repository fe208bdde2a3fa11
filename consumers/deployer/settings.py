"""The deployer's own configuration (`ORCH_DEPLOYER__*`), beside the shared groups it also reads."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .service import DeployerConfig


class DeployerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_DEPLOYER__", extra="ignore")

    deploy_root: str = Field(
        "/srv/orchestrator", description="Directory on each server holding one folder per project"
    )
    health_timeout_seconds: int = Field(
        60, description="How long a new release may take to answer its health check"
    )
    run_timeout_seconds: int = Field(900, description="Longest a playbook run may take")
    docker_command: str = Field("docker", description="docker CLI on compose-mode servers")
    concurrency: int = Field(
        default_factory=lambda: 2 * (os.cpu_count() or 1),
        ge=1,
        description=(
            "Deploys at once across every deployer replica (the durable's max_ack_pending); "
            "the rest wait in the stream, shown by `orchestrator lag`. A deploy mostly waits "
            "on its server, so the default is twice this machine's CPUs; size it down to what "
            "the deploy servers take"
        ),
    )

    def service_config(self, heartbeat_seconds: float) -> DeployerConfig:
        return DeployerConfig(
            deploy_root=self.deploy_root,
            health_timeout_seconds=self.health_timeout_seconds,
            heartbeat_seconds=heartbeat_seconds,
            docker_command=self.docker_command,
        )
