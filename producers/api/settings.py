"""The API's own settings (`ORCH_API__*`); NATS, database and Vault come from `infra.settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Where the HTTP API listens, how long it waits for the bus, and what it accepts per caller."""

    model_config = SettingsConfigDict(env_prefix="ORCH_API__", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to bind; put a TLS proxy in front")
    port: int = Field(8080, description="Port to bind", ge=0, le=65535)
    publish_timeout_seconds: float = Field(
        5.0, description="How long a request waits for JetStream's acknowledgement before 503"
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Proxies whose X-Forwarded-* headers are trusted (status URLs)"
    )
    max_body_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request body accepted (413 above it), checked before parsing",
    )
    rate_limit: str = Field(
        "120/minute", description="Requests per token in a moving window, e.g. 60/minute"
    )
    rate_limit_storage: str = Field(
        "async+memory://",
        description="`limits` storage URI: memory counts per replica; async+redis://... "
        "shares one count across replicas",
    )
