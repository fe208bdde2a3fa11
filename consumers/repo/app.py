"""Composition root of the repo process: the git host from settings, the handler registered."""

from __future__ import annotations

from infra.bus.runtime import ConsumerApp
from infra.repo_urls import ForgeSettings
from infra.settings import Settings, get_settings
from infra.vault import SecretNotFound, VaultClient

from .adoption import Adopter
from .errors import RepoHostError
from .github_host import GitHubHost, TokenProvider
from .handlers import register, register_adoption, register_reconciliation, register_revisions
from .local_forge import LocalForge
from .ports import GitHost, Scaffolder
from .reconciliation import Reconciler
from .revision import RevisionRenderer
from .scaffold import JinjaScaffolder
from .service import RepoService
from .settings import RepoSettings


def vault_token_provider(settings: Settings, path: str) -> TokenProvider:
    """Reads the GitHub token from Vault at each use, so a rotated token takes effect at once."""

    async def read() -> str:
        vault = VaultClient.from_settings(settings.vault)
        await vault.login()
        try:
            secret = await vault.read_secret(path)
        except SecretNotFound as exc:
            raise RepoHostError(f"no GitHub token in Vault at {path} (key `token`)") from exc
        return secret.get("token", "")

    return read


def build_host(settings: Settings, repo: RepoSettings) -> GitHost:
    if repo.host == "github":
        if not repo.github_owner:
            raise ValueError("ORCH_REPO_HOST=github needs ORCH_REPO_GITHUB_OWNER")
        return GitHubHost(
            vault_token_provider(settings, repo.github_token_path),
            repo.github_owner,
            owner_is_org=repo.github_owner_is_org,
            api_base_url=repo.github_api_url,
            private=repo.github_private,
        )
    return LocalForge(repo.local_base or settings.state_dir / "git", repo.daemon_url)


def build_app(
    settings: Settings | None = None,
    *,
    repo_settings: RepoSettings | None = None,
    host: GitHost | None = None,
    scaffolder: Scaffolder | None = None,
    forge: ForgeSettings | None = None,
) -> ConsumerApp:
    """The repo process; tests pass their own host (e.g. a forge on the test's git daemon)
    and the forge settings adopted repositories are checked against."""
    settings = settings or get_settings()
    repo = repo_settings or RepoSettings()
    app = ConsumerApp("repo", settings=settings)
    git_host = host or build_host(settings, repo)
    renderer = scaffolder or JinjaScaffolder()
    register(app, RepoService(git_host, renderer))
    register_revisions(app, RevisionRenderer(git_host, renderer))
    register_adoption(app, Adopter(git_host, forge or forge_of(repo)))
    register_reconciliation(app, Reconciler(git_host))
    return app


def forge_of(repo: RepoSettings) -> ForgeSettings:
    """The git host as every process checks URLs against it, from the repo step's own settings."""
    return ForgeSettings(
        host=repo.host,
        daemon_url=repo.daemon_url,
        local_base=repo.local_base,
        github_owner=repo.github_owner,
        github_api_url=repo.github_api_url,
    )


def main() -> None:
    build_app().run()
