"""Configuration of the engineer consumer: which coding agent runs, and where.

Read from `ORCH_ENGINEER_*` variables (e.g. `ORCH_ENGINEER_MODE=container`,
`ORCH_ENGINEER_IMAGE=registry.example/coder:1.4`). Without `ORCH_ENGINEER_MODE` the mode
follows the LLM provider: `offline` when `ORCH_LLM__PROVIDER=offline`, else `inprocess`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings import LLMSettings

EngineerMode = Literal["offline", "inprocess", "container"]


class EngineerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_ENGINEER_", extra="ignore")

    mode: EngineerMode | None = Field(
        None, description="offline | inprocess | container; unset: follow the LLM provider"
    )
    workspace_root: Path | None = Field(
        None, description="Where temporary checkouts go (default: the system temp directory)"
    )
    docker_url: str = Field(
        "unix:///var/run/docker.sock", description="Docker engine API URL for container mode"
    )
    image: str = Field(
        "codegen-orchestrator/coder:latest",
        description="Coding agent image, built from infra/docker/coder.Dockerfile",
    )
    network_mode: str = Field(
        "bridge", description="Container network; the agent must reach the LLM provider"
    )
    container_timeout_seconds: float = Field(
        1800.0, description="A coding container running longer is killed; the task fails"
    )
    git_host: Literal["local", "github"] = Field(
        "local", description="local: the embedded git daemon (no auth); github: token auth"
    )
    github_token_path: str = Field(
        "platform/github", description="Vault KV path holding the GitHub token under `token`"
    )

    def resolved_mode(self, llm: LLMSettings) -> EngineerMode:
        if self.mode is not None:
            return self.mode
        return "offline" if llm.provider.strip().lower() == "offline" else "inprocess"
