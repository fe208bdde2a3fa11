"""The container adapter against a real dockerd: create, mount, env, wait, logs, cleanup."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from consumers.engineer.container_coder import ContainerCoder, ContainerEngineError
from consumers.engineer.service import EngineerService
from consumers.engineer.test_runner import PytestRunner
from consumers.engineer.workspace import GitWorkspaces
from contracts.events import CodeFailed, CodeGenerated
from infra.settings import LLMSettings
from tests.engineer.conftest import (
    BROKEN_FILES,
    TEST_IMAGE,
    RepoFactory,
    code_requested,
    no_heartbeat,
)
from tests.engineer.docker_engine import DockerEngine

API_KEY = "sk-container-secret-123"


async def vault_key() -> str:
    return API_KEY


def container_coder(
    engine: DockerEngine, *, image: str = TEST_IMAGE, timeout: float = 60.0, **env: str
) -> ContainerCoder:
    return ContainerCoder(
        docker_client=engine.client,
        image=image,
        api_key=vault_key,
        settings=LLMSettings(provider="openai", model="coder-model"),
        runner=PytestRunner(),
        command=("/bin/sh", "/agent.sh"),
        network_mode="none",
        timeout_seconds=timeout,
        heartbeat_seconds=0.2,
        extra_env=env,
    )


def containers_left(engine: DockerEngine) -> list[object]:
    return list(engine.client().containers.list(all=True))


async def test_the_agent_container_fixes_the_code_and_the_host_verifies_it(
    docker_engine: DockerEngine, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        beats += 1

    coder = container_coder(docker_engine, AGENT_SLEEP="1")
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3, heartbeat_seconds=60)

    result = await service.handle(code_requested(url, base), heartbeat)

    event = result.event
    assert isinstance(event, CodeGenerated), event
    assert (event.mode, event.iterations, event.tests_passed, event.tests_failed) == (
        "container", 1, 4, 0,
    )
    assert event.summary == "Implemented subtract in a container"
    (usage,) = result.usage
    assert (usage.model, usage.prompt_tokens, usage.completion_tokens, usage.cost_usd) == (
        "coder-model", 120, 30, Decimal("0.000105"),
    )
    assert f"key has {len(API_KEY)} characters, model coder-model" in coder.last_logs
    assert "agent: task received" in coder.last_logs
    assert API_KEY not in coder.last_logs
    assert beats >= 3  # one second of work, a beat every 0.2 s
    assert containers_left(docker_engine) == []


async def test_a_container_past_its_deadline_is_killed_and_removed(
    docker_engine: DockerEngine, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    coder = container_coder(docker_engine, timeout=1.0, AGENT_SLEEP="60")
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    started = time.monotonic()
    result = await service.handle(code_requested(url, base), no_heartbeat)

    assert time.monotonic() - started < 30
    assert isinstance(result.event, CodeFailed)
    assert result.event.reason == "the coding container timed out after 1 s"
    assert containers_left(docker_engine) == []


async def test_a_crashed_agent_is_a_failure_quoting_its_logs(
    docker_engine: DockerEngine, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    coder = container_coder(docker_engine, AGENT_EXIT="3")
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    result = await service.handle(code_requested(url, base), no_heartbeat)

    assert isinstance(result.event, CodeFailed)
    assert "exited with status 3 without a result" in result.event.reason
    assert "agent: crashing" in result.event.reason
    assert containers_left(docker_engine) == []


async def test_a_missing_image_is_an_engine_error_not_a_code_failure(
    docker_engine: DockerEngine, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    coder = container_coder(docker_engine, image="orchestrator-test/absent:1")
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    with pytest.raises(ContainerEngineError, match="cannot create the coding container"):
        await service.handle(code_requested(url, base), no_heartbeat)
    assert containers_left(docker_engine) == []

