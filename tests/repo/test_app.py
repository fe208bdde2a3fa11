"""The composition root picks the git host from `ORCH_REPO_*` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.repo.app import build_host
from consumers.repo.github_host import GitHubHost
from consumers.repo.local_forge import LocalForge
from consumers.repo.settings import RepoSettings
from infra.settings import Settings


def test_the_default_is_the_local_forge_under_the_state_dir(tmp_path: Path) -> None:
    host = build_host(Settings(state_dir=tmp_path), RepoSettings())
    assert isinstance(host, LocalForge)
    assert host.base_dir == tmp_path / "git"
    assert host.daemon_url == "git://127.0.0.1:9418"


def test_github_is_chosen_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_REPO_HOST", "github")
    monkeypatch.setenv("ORCH_REPO_GITHUB_OWNER", "acme")
    monkeypatch.setenv("ORCH_REPO_GITHUB_OWNER_IS_ORG", "false")
    host = build_host(Settings(), RepoSettings())
    assert isinstance(host, GitHubHost)
    assert (host.owner, host.owner_is_org, host.api_base_url) == (
        "acme",
        False,
        "https://api.github.com",
    )


def test_github_without_an_owner_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="ORCH_REPO_GITHUB_OWNER"):
        build_host(Settings(), RepoSettings(host="github"))
