"""Typed configuration, grouped by concern, read once per process from `ORCH_*` variables.

Nested groups use a double underscore: `ORCH_NATS__URL`, `ORCH_DATABASE__URL`,
`ORCH_VAULT__ROLE_ID`. The local stack launcher writes exactly these for every child
process, so a consumer started by hand with the same environment behaves the same way.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _read_credential(path: Path, setting: str) -> str:
    """The value in a credentials file, or an error saying which setting points where."""
    try:
        return path.read_text().strip()
    except OSError as error:
        raise ValueError(
            f"{setting}={path} cannot be read ({error.strerror}); the local stack writes it "
            "before starting the process, so start the process through `orchestrator up`"
        ) from error


#: Where the Helm chart projects each pod's service account token for Vault (audience `vault`).
KUBERNETES_TOKEN_FILE = Path("/var/run/secrets/vault/token")


class NatsSettings(BaseModel):
    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma separated")
    duplicate_window_seconds: float = Field(
        120.0, description="JetStream duplicate window: a Nats-Msg-Id seen within it is dropped"
    )
    stream_replicas: int = Field(1, description="Replicas per stream (3 in a production cluster)")
    connect_timeout_seconds: float = Field(
        60.0,
        description="How long a process keeps trying its first connection (a refused login, "
        "no server) before it exits with the last error; once connected it reconnects forever",
    )
    new_durable_lookback_seconds: float = Field(
        600.0,
        description="Where a durable created for the first time starts: at the messages stored "
        "in the last this many seconds (a step added by an upgrade does not replay the streams' "
        "14 days of history, and processes started together miss nothing)",
    )


class DatabaseSettings(BaseModel):
    url: str = Field(
        "postgresql+psycopg://orchestrator@127.0.0.1:5432/orchestrator",
        description="SQLAlchemy URL; the psycopg (v3) driver is used in async mode",
    )
    pool_size: int = Field(20, description="Connections per process")
    lock_timeout_seconds: float = Field(
        10.0,
        ge=0,
        description="How long a statement waits for a row or table lock before it fails "
        "(PostgreSQL `lock_timeout`; 0 waits for ever). A step that meets it is retried on the "
        "long transient schedule, so contention never dead-letters healthy work",
    )
    statement_timeout_seconds: float = Field(
        300.0,
        ge=0,
        description="The longest one statement may run (PostgreSQL `statement_timeout`; "
        "0 disables). A statement past it fails its step like any error",
    )
    url_file: Path | None = Field(
        None,
        description="A private file holding the URL (with its password); read at start, "
        "it replaces `url` so the password is in no environment a child inherits",
    )

    def session_options(self) -> str:
        """The libpq `options` that put this process's timeouts on every connection it opens."""
        return (
            f"-c lock_timeout={round(self.lock_timeout_seconds * 1000)}"
            f" -c statement_timeout={round(self.statement_timeout_seconds * 1000)}"
        )

    @model_validator(mode="after")
    def _read_url_file(self) -> DatabaseSettings:
        if self.url_file is not None:
            self.url = _read_credential(self.url_file, "ORCH_DATABASE__URL_FILE")
        return self


class VaultSettings(BaseModel):
    addr: str = Field("http://127.0.0.1:8200", description="Vault or OpenBao address")
    role_id: str = Field("", description="This process's AppRole role id")
    secret_id: SecretStr = Field(SecretStr(""), description="This process's AppRole secret id")
    secret_id_file: Path | None = Field(
        None,
        description="A private file holding the AppRole secret id (the local stack's way): read "
        "at start and at each login, so a rotated secret id takes effect",
    )
    token: SecretStr = Field(
        SecretStr(""), description="A token to use instead of AppRole (operators and tests only)"
    )
    auth: Literal["approle", "kubernetes"] = Field(
        "approle",
        description="How the process logs in: `approle` (role id and secret id; the local stack "
        "and compose) or `kubernetes` (its pod's service account token; the Helm chart)",
    )
    kubernetes_role: str = Field(
        "",
        description="With auth=kubernetes: the Vault role bound to this process's service "
        "account and namespace (the chart names it after the process)",
    )
    kubernetes_token_file: Path = Field(
        KUBERNETES_TOKEN_FILE,
        description="With auth=kubernetes: the projected service account token (audience "
        "`vault`); read at each login, as the kubelet rotates it",
    )
    kubernetes_mount: str = Field("kubernetes", description="The Kubernetes auth method's mount")
    kv_mount: str = Field("secret", description="KV v2 mount point")
    transit_mount: str = Field("transit", description="Transit engine mount point")

    @model_validator(mode="after")
    def _kubernetes_auth_names_its_role(self) -> VaultSettings:
        if self.auth == "kubernetes" and not self.kubernetes_role:
            raise ValueError(
                "ORCH_VAULT__AUTH=kubernetes needs ORCH_VAULT__KUBERNETES_ROLE, the Vault role "
                "bound to this process's service account"
            )
        return self

    @model_validator(mode="after")
    def _read_secret_id_file(self) -> VaultSettings:
        if self.secret_id_file is not None:
            self.secret_id = SecretStr(
                _read_credential(self.secret_id_file, "ORCH_VAULT__SECRET_ID_FILE")
            )
        return self


class ConsumerSettings(BaseModel):
    batch_size: int | None = Field(
        None, description="Override every durable's batch size (contracts.topology) if set"
    )
    fetch_wait_seconds: float = Field(
        5.0, description="How long an idle pull waits for a message before asking again"
    )
    shutdown_grace_seconds: float = Field(
        30.0, description="How long stopping waits for the batch in hand to finish"
    )
    heartbeat_seconds: float = Field(
        10.0, description="How often a running step tells JetStream it is still in progress"
    )
    backoff_seconds: list[float] = Field(
        [1.0, 5.0, 15.0, 60.0], description="Nak delay by delivery attempt; the last repeats"
    )
    transient_backoff_seconds: list[float] = Field(
        [5.0, 15.0, 30.0, 60.0, 120.0, 300.0],
        description=(
            "Nak delay by delivery attempt after a TransientError (a dependency that is down); "
            "the last repeats, up to infra.bus.topology.TRANSIENT_MAX_DELIVER deliveries"
        ),
    )
    step_timeout_seconds: float = Field(
        1800.0,
        description=(
            "Deadline of one step (one handler run); past it the step is cancelled and the "
            "message retried with backoff. Per durable overrides go in step_timeouts"
        ),
    )
    step_timeouts: dict[str, float] = Field(
        default_factory=lambda: {"engineer": 3600.0, "deployer": 3600.0},
        description="Step deadline in seconds by durable name, overriding step_timeout_seconds",
    )
    database_probe_seconds: float = Field(
        2.0,
        description=(
            "While the database is unreachable, how often the paused consumer checks whether "
            "it is back (the messages in hand wait, their deliveries are not spent)"
        ),
    )


class MetricsSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Interface for /metrics, /livez and /readyz")
    port: int = Field(
        0, description="Port for /metrics, /livez and /readyz; 0 disables the endpoints"
    )


class HealthSettings(BaseModel):
    """What `/livez` and `/readyz` tolerate (`infra/health.py`)."""

    loop_stale_seconds: float = Field(
        10.0,
        ge=2.0,
        description="/livez fails once the event loop has not run its heartbeat for this long "
        "(a handler blocking the loop, a deadlock); at least 2 s, since the heartbeat beats "
        "once a second and a limit near that would fail a loop that is merely busy",
    )
    check_timeout_seconds: float = Field(
        3.0,
        gt=0,
        description="How long /readyz waits for one check (NATS, PostgreSQL, Vault) before "
        "counting it failed",
    )


#: Where a coder on another provider or endpoint than the analyst's finds its key by default.
CODER_KEY_SECRET = "platform/llm_coder"  # noqa: S105 - a Vault path, not a secret


class LLMSettings(BaseModel):
    provider: str = Field(
        "offline", description="offline | openai (any OpenAI-compatible endpoint) | anthropic"
    )
    base_url: str = Field("", description="OpenAI-compatible base URL (vLLM, Ollama, OpenRouter)")
    model: str = Field("gpt-4o-mini", description="Model name sent to the provider")
    api_key_secret: str = Field(
        "platform/llm", description="Vault KV path holding the provider key under `api_key`"
    )
    prompt_cost_per_1k: float = Field(0.0, description="USD per 1,000 prompt tokens")
    completion_cost_per_1k: float = Field(0.0, description="USD per 1,000 completion tokens")
    max_coder_iterations: int = Field(6, description="Coder loop bound before giving up")


class QuotaSettings(BaseModel):
    """Defaults bounding what one person can spend; an admin overrides them per user or project."""

    projects_per_day: int = Field(10, description="New projects one user may request per day")
    builds_at_once: int = Field(2, description="Projects of one user building at the same time")
    llm_usd_per_project: float = Field(
        2.0, description="LLM budget of one project in USD (all stages, all revisions)"
    )
    llm_usd_per_user_month: float = Field(
        20.0, description="LLM budget of one user per calendar month in USD"
    )


class MemorySettings(BaseModel):
    """Where project memory lives (`infra/memory.py`): a local path, or a Qdrant server."""

    url: str = Field(
        "", description="Qdrant server URL (docker-compose, Helm); empty means local mode on disk"
    )
    path: Path | None = Field(
        None, description="Local mode directory; empty means `<state_dir>/memory`"
    )
    collection: str = Field("memory", description="Collection holding every user's memory")
    embedding_model: str = Field(
        "text-embedding-3-small",
        description="Model of the provider's /embeddings endpoint, used when the LLM provider "
        "is OpenAI-compatible (then search is hybrid); otherwise memory is lexical only",
    )


class Settings(BaseSettings):
    """Everything one process needs; each group can be overridden by its own variables."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", env_nested_delimiter="__", extra="ignore")

    process_name: str = Field("orchestrator", description="Name in logs, metrics and Vault role")
    state_dir: Path = Field(Path(".state"), description="Where the local stack keeps its data")
    nats: NatsSettings = NatsSettings()
    database: DatabaseSettings = DatabaseSettings()
    vault: VaultSettings = VaultSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    metrics: MetricsSettings = MetricsSettings()
    health: HealthSettings = HealthSettings()
    llm: LLMSettings = LLMSettings()
    #: The engineer's model when it should differ from the analyst's (`ORCH_CODER_LLM__*`):
    #: only the fields set here replace `llm`'s, so `ORCH_CODER_LLM__MODEL` alone keeps the
    #: provider, base URL and key and changes the model. Read it through `coder`.
    coder_llm: LLMSettings | None = None
    quotas: QuotaSettings = QuotaSettings()
    memory: MemorySettings = MemorySettings()

    @property
    def coder(self) -> LLMSettings:
        """The engineer's LLM settings: `llm`, with every field `coder_llm` sets replaced.

        Field by field rather than as a whole, so a stronger coding model on the same provider
        is one variable. The analyst's key only ever goes to the analyst's endpoint: a coder on
        another provider does not inherit the base URL, and a coder on another provider or base
        URL reads its key from `platform/llm_coder` unless it names a key path itself.
        """
        if self.coder_llm is None:
            return self.llm
        own = self.coder_llm.model_dump(include=self.coder_llm.model_fields_set)
        merged = self.llm.model_copy(update=own)
        if merged.provider != self.llm.provider and "base_url" not in own:
            merged.base_url = ""
        elsewhere = (merged.provider, merged.base_url) != (self.llm.provider, self.llm.base_url)
        if elsewhere and "api_key_secret" not in own:
            merged.api_key_secret = CODER_KEY_SECRET
        return merged


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
