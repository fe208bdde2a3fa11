"""Configuration of the repo consumer: which git host it creates repositories on.

Read from `ORCH_REPO_*` variables (e.g. `ORCH_REPO_HOST=github`, `ORCH_REPO_GITHUB_OWNER=acme`).
The default is the embedded forge: bare repositories under `<ORCH_STATE_DIR>/git`, served by the
local stack's `git daemon` on `git://127.0.0.1:9418`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RepoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_REPO_", extra="ignore")

    host: Literal["local", "github"] = Field(
        "local", description="local: bare repositories served by git daemon; github: GitHub"
    )
    local_base: Path | None = Field(
        None, description="Directory of the bare repositories (default <ORCH_STATE_DIR>/git)"
    )
    daemon_url: str = Field(
        "git://127.0.0.1:9418", description="git daemon URL serving local_base (--base-path)"
    )
    github_owner: str = Field("", description="Organization or user that owns the repositories")
    github_owner_is_org: bool = Field(
        True, description="True: create under the organization; False: under the token's user"
    )
    github_api_url: str = Field("https://api.github.com", description="GitHub REST API base URL")
    github_private: bool = Field(True, description="Create private repositories")
    github_token_path: str = Field(
        "platform/github", description="Vault KV path holding the GitHub token under `token`"
    )
