"""The API's own settings (`ORCH_API__*`); NATS, database and Vault come from `infra.settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Where the HTTP API listens and how long it waits for the bus before answering 503."""

    model_config = SettingsConfigDict(env_prefix="ORCH_API__", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to bind; put a TLS proxy in front")
    port: int = Field(8080, description="Port to bind", ge=0, le=65535)
    publish_timeout_seconds: float = Field(
        5.0, description="How long a request waits for JetStream's acknowledgement before 503"
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Proxies whose X-Forwarded-* headers are trusted (status URLs)"
    )
