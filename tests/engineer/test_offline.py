"""Offline mode against a real git daemon: the scaffold is installed, tested and reported."""

from __future__ import annotations

import time

from consumers.engineer.service import EngineerService
from consumers.engineer.template_engineer import TemplateEngineer
from consumers.engineer.test_runner import PytestRunner
from consumers.engineer.workspace import GitWorkspaces
from contracts.events import CodeFailed, CodeGenerated
from tests.engineer.conftest import (
    BROKEN_FILES,
    SERVICE_FILES,
    RepoFactory,
    code_requested,
    no_heartbeat,
)


def offline_service() -> EngineerService:
    return EngineerService(
        TemplateEngineer(PytestRunner()), GitWorkspaces(), max_iterations=3
    )


async def test_a_passing_scaffold_is_the_commit_to_deploy(make_repo: RepoFactory) -> None:
    url, sha = make_repo(SERVICE_FILES)
    request = code_requested(url, sha)

    started = time.monotonic()
    result = await offline_service().handle(request, no_heartbeat)
    elapsed = time.monotonic() - started

    event = result.event
    assert isinstance(event, CodeGenerated), event
    assert event.commit == sha
    assert (event.mode, event.iterations, event.tests_passed, event.tests_failed) == (
        "offline", 0, 2, 0,
    )
    assert "Offline mode" in event.summary
    assert event.causation_id == request.event_id
    assert result.usage == ()
    print(f"offline scaffold verify: {elapsed:.1f} s")


async def test_a_failing_scaffold_is_code_failed_with_the_failing_test(
    make_repo: RepoFactory,
) -> None:
    url, sha = make_repo(BROKEN_FILES)

    result = await offline_service().handle(code_requested(url, sha), no_heartbeat)

    event = result.event
    assert isinstance(event, CodeFailed), event
    assert "3 passed, 1 failed" in event.reason
    assert "test_subtract" in event.reason
    assert "cannot import name 'subtract'" in event.reason


async def test_an_unknown_base_commit_fails_with_a_clear_reason(make_repo: RepoFactory) -> None:
    url, _ = make_repo(SERVICE_FILES)

    result = await offline_service().handle(code_requested(url, "0" * 40), no_heartbeat)

    assert isinstance(result.event, CodeFailed)
    assert "is not in" in result.event.reason
