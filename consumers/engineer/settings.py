"""Configuration of the engineer consumer: which coding agent runs, and where.

Read from `ORCH_ENGINEER_*` variables (e.g. `ORCH_ENGINEER_MODE=container`,
`ORCH_ENGINEER_IMAGE=registry.example/coder:1.4`). Without `ORCH_ENGINEER_MODE` the mode
follows the LLM provider: `offline` when `ORCH_LLM__PROVIDER=offline`, else `inprocess`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
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
    container_timeout_seconds: float = Field(
        1800.0, description="A coding container running longer is killed; the task fails"
    )
    container_memory: str = Field("2g", description="Memory (and swap) limit of each container")
    container_cpus: float = Field(1.0, description="CPUs each coding or test container may use")
    container_pids: int = Field(256, description="Process limit of each container")
    llm_time_limit_seconds: float = Field(
        1800.0, description="After this long the metering proxy refuses a run's LLM calls"
    )
    coder_time_limit_seconds: float = Field(
        1200.0,
        gt=0,
        description="Wall clock of one LLM coding run; past it the run stops and fails with "
        "the reason (below the coordinator's 60 min engineer step deadline, so the step "
        "reports instead of being cancelled)",
    )
    git_host: Literal["local", "github"] = Field(
        "local", description="local: the embedded git daemon (no auth); github: token auth"
    )
    github_token_path: str = Field(
        "platform/github", description="Vault KV path holding the GitHub token under `token`"
    )

    concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description=(
            "Builds at once across every engineer replica (the durable's max_ack_pending); the "
            "rest wait in the stream, shown by `orchestrator lag`. A build runs installs and "
            "tests, about one CPU each, so the default is this machine's CPUs"
        ),
    )
    sandbox: Literal["bubblewrap", "none"] = Field(
        "bubblewrap",
        description="How model-written code (installs, tests) runs: bubblewrap (namespaces, "
        "unprivileged user, limits) or none (on the host; needs allow_unsandboxed as well)",
    )
    allow_unsandboxed: bool = Field(
        False, description="Confirms sandbox=none; meant for inside a coding container only"
    )
    sandbox_user: str = Field(
        "orch-sandbox", description="System user sandboxed code runs as when the engineer is root"
    )
    sandbox_cache_dir: Path | None = Field(
        None,
        description="Cached test venvs (one per requirements hash) and pip's wheel cache "
        "(default: ~/.cache/codegen-orchestrator/sandbox)",
    )
    sandbox_cpu_seconds: int = Field(600, description="RLIMIT_CPU of each sandboxed process")
    sandbox_memory_mb: int = Field(2048, description="RLIMIT_AS of each sandboxed process")
    sandbox_processes: int = Field(256, description="RLIMIT_NPROC of the sandbox user")
    sandbox_open_files: int = Field(1024, description="RLIMIT_NOFILE of each sandboxed process")
    sandbox_file_size_mb: int = Field(256, description="RLIMIT_FSIZE of each sandboxed process")
    sandbox_output_kb: int = Field(1024, description="Output kept per run; more kills the run")
    install_timeout_seconds: float = Field(600.0, description="Wall clock of a dependency install")
    test_timeout_seconds: float = Field(300.0, description="Wall clock of one test run")

    @model_validator(mode="after")
    def _unsandboxed_is_explicit(self) -> EngineerSettings:
        if self.sandbox == "none" and not self.allow_unsandboxed:
            raise ValueError(
                "ORCH_ENGINEER_SANDBOX=none runs model-written code on the host with the "
                "engineer's privileges; set ORCH_ENGINEER_ALLOW_UNSANDBOXED=true as well if this "
                "is a coding container or a throwaway machine, else use bubblewrap"
            )
        return self

    def resolved_mode(self, llm: LLMSettings) -> EngineerMode:
        if self.mode is not None:
            return self.mode
        return "offline" if llm.provider.strip().lower() == "offline" else "inprocess"
