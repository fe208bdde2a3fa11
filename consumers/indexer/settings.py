"""Configuration of the indexer: how it reads a released commit from the git host.

Read from `ORCH_INDEXER_*` variables. The git host itself is the deployment's
(`ORCH_REPO_*`, `infra.repo_urls.ForgeSettings`). On the embedded forge the indexer clones
from `git daemon`, which serves reads only; on GitHub it reads with its own token at
`github_token_path`, which should be a read-only one (a fine-grained token with `contents:
read`): the indexer never writes to a repository, so it never holds the token that can.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IndexerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_INDEXER_", extra="ignore")

    github_token_path: str = Field(
        "platform/github_read",
        description="Vault KV path (key `token`) of the read-only GitHub token",
    )
    checkout_root: Path | None = Field(
        None, description="Where temporary checkouts go (default: the system temp directory)"
    )
    git_timeout_seconds: float = Field(
        120.0, description="A clone or checkout running longer is retried later"
    )
