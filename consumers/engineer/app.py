"""Composition root of the engineer process: the coding agent chosen by configuration.

`ORCH_ENGINEER_MODE` picks the agent (see `settings.py`): the offline template engineer, the
in-process LangGraph coder or the container coder. Its model is `Settings.coder`: the
analyst's `ORCH_LLM__*` with whatever `ORCH_CODER_LLM__*` sets instead. Both LLM modes
reach the provider only through a per-run metering proxy (`llm_proxy/`), which reads the key
from Vault at the start of each run, records every call in `llm_usage` and enforces the LLM
budget; the model-facing client holds a one-time token only. Pushing to GitHub authenticates
with a token read from Vault at each push.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping

import docker
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.engineer.agent import CodingAgent, CodingTask
from consumers.engineer.container_coder import ContainerCoder, ContainerLimits
from consumers.engineer.handlers import register
from consumers.engineer.llm_proxy.ledger import DatabaseLedger
from consumers.engineer.llm_proxy.run import ProxyLauncher
from consumers.engineer.metered_coder import MeteredCoder
from consumers.engineer.sandbox import build_sandbox, cache_dir_from, limits_from
from consumers.engineer.service import EngineerService
from consumers.engineer.settings import EngineerSettings
from consumers.engineer.template_engineer import TemplateEngineer
from consumers.engineer.test_runner import PytestRunner
from consumers.engineer.usage_ledger import STAGE
from consumers.engineer.verifier import RepositoryVerifier
from consumers.engineer.workspace import GitEnvProvider, GitUnavailable, GitWorkspaces
from contracts.topology import ENGINEER
from infra.bus.runtime import ConsumerApp
from infra.bus.topology import with_concurrency
from infra.git_access import github_token_env
from infra.llm import LLMConfigurationError
from infra.memory_client import BusMemorySearch
from infra.settings import Settings, get_settings
from infra.stack.git_daemon import local_forge_push_environment
from infra.vault import SecretNotFound, VaultClient

SecretSource = Callable[[], Awaitable[str]]


def vault_value(settings: Settings, path: str, key: str, purpose: str) -> SecretSource:
    """Reads one value from Vault with this process's AppRole, at each call."""

    async def read() -> str:
        vault = VaultClient.from_settings(settings.vault)
        await vault.login()
        try:
            secret = await vault.read_secret(path)
        except SecretNotFound as exc:
            raise SecretNotFound(
                f"{purpose} needs a value in Vault at {path} (key `{key}`): store it with "
                f"`orchestrator secrets set-platform {path.removeprefix('platform/')} {key}`"
            ) from exc
        return secret.get(key, "")

    return read


def github_git_env(token: SecretSource) -> GitEnvProvider:
    """Git configuration that sends the GitHub token as the `x-access-token` Basic header."""

    async def env() -> Mapping[str, str]:
        value = await token()
        if not value:
            raise GitUnavailable("no GitHub token is configured (Vault platform/github, key token)")
        return github_token_env(value)

    return env


class _Engineer:
    """The service, built on startup, when the process's database sessions exist."""

    def __init__(
        self,
        settings: Settings,
        engineer: EngineerSettings,
        api_key_source: SecretSource,
        git_env: GitEnvProvider | None,
        sessions: Callable[[], async_sessionmaker[AsyncSession] | None],
        nats: Callable[[], Client | None],
    ) -> None:
        self._settings = settings
        self._nats = nats
        self._engineer = engineer
        self._api_key_source = api_key_source
        self._git_env = git_env
        self._sessions = sessions
        self._service: EngineerService | None = None

    async def start(self) -> None:
        settings, engineer = self._settings, self._engineer
        git_env = self._git_env
        if git_env is None and engineer.git_host == "github":
            git_env = github_git_env(
                vault_value(settings, engineer.github_token_path, "token", "pushing to GitHub")
            )
        if git_env is None and engineer.git_host == "local":
            # The embedded forge's daemon serves reads only; pushes go to the bare repository.
            push_env = local_forge_push_environment(settings.state_dir)

            async def push_by_path() -> Mapping[str, str]:
                return push_env

            git_env = push_by_path
        runner = PytestRunner(
            sandbox=build_sandbox(engineer),
            limits=limits_from(engineer),
            cache_dir=cache_dir_from(engineer),
            install_timeout=engineer.install_timeout_seconds,
            test_timeout=engineer.test_timeout_seconds,
        )
        self._service = EngineerService(
            await self._agent(runner),
            GitWorkspaces(root=engineer.workspace_root, git_env=git_env),
            max_iterations=settings.coder.max_coder_iterations,
            heartbeat_seconds=settings.consumer.heartbeat_seconds,
            verifier=RepositoryVerifier(runner),
            # The project's code and history, searched through the indexer over NATS.
            memory=BusMemorySearch(nc) if (nc := self._nats()) is not None else None,
        )

    async def _agent(self, runner: PytestRunner) -> CodingAgent:
        settings, engineer = self._settings, self._engineer
        coder = settings.coder
        mode = engineer.resolved_mode(coder)
        if mode == "offline":
            return TemplateEngineer(runner)
        proxy = ProxyLauncher(
            coder,
            self._api_key_source,
            time_limit_seconds=engineer.llm_time_limit_seconds,
        )
        if mode == "container":
            url = engineer.docker_url
            return ContainerCoder(
                docker_client=lambda: docker.DockerClient(base_url=url),
                image=engineer.image,
                proxy=proxy,
                ledger=self._ledger,
                settings=coder,
                limits=ContainerLimits(
                    memory=engineer.container_memory,
                    cpus=engineer.container_cpus,
                    pids=engineer.container_pids,
                ),
                timeout_seconds=engineer.container_timeout_seconds,
                test_timeout_seconds=engineer.test_timeout_seconds,
                heartbeat_seconds=settings.consumer.heartbeat_seconds,
            )
        if coder.provider.strip().lower() == "offline":
            raise LLMConfigurationError(
                "ORCH_ENGINEER_MODE=inprocess needs an LLM provider; set ORCH_LLM__PROVIDER "
                "(or ORCH_CODER_LLM__PROVIDER) or use ORCH_ENGINEER_MODE=offline"
            )
        return MeteredCoder(
            proxy,
            self._ledger,
            runner,
            coder,
            time_limit_seconds=engineer.coder_time_limit_seconds,
            # Before a commit the app must start as the deployer starts it, in the sandbox.
            app_checker=runner,
        )

    def _ledger(self, task: CodingTask) -> DatabaseLedger:
        """Each run's calls go to `llm_usage` under the request's event id, as they happen."""
        sessionmaker = self._sessions()
        if sessionmaker is None or task.request_id is None:
            raise RuntimeError("the engineer runs a coding task before its database is ready")
        return DatabaseLedger(
            sessionmaker,
            project_id=uuid.UUID(task.project_id),
            event_id=task.request_id,
            stage=STAGE,
            quotas=self._settings.quotas,
        )

    def service(self) -> EngineerService:
        if self._service is None:
            raise RuntimeError("the engineer is used before the process started")
        return self._service


def build_app(
    settings: Settings | None = None,
    *,
    engineer_settings: EngineerSettings | None = None,
    api_key_source: SecretSource | None = None,
    git_env: GitEnvProvider | None = None,
) -> ConsumerApp:
    """The engineer process; tests pass a key source and git env instead of Vault logins."""
    settings = settings or get_settings()
    engineer_settings = engineer_settings or EngineerSettings()
    app = ConsumerApp(
        "engineer",
        settings=settings,
        specs=(with_concurrency(ENGINEER, engineer_settings.concurrency),),
    )
    engineer = _Engineer(
        settings,
        engineer_settings,
        api_key_source
        or vault_value(settings, settings.coder.api_key_secret, "api_key", "the LLM provider"),
        git_env,
        lambda: app.sessionmaker,
        lambda: app.nc,
    )
    app.on_startup.append(engineer.start)
    register(app, engineer.service)
    return app


def main() -> None:
    build_app().run()
