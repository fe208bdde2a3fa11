"""What the contracts refuse, and the forge check every cloning step runs on a URL.

These values become paths, git arguments and Vault paths on real machines, so each rule is
checked with the inputs an attacker would try, next to the ones the pipeline really produces.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from consumers.analyst.slugs import SLUG_PATTERN as ANALYST_SLUG_PATTERN
from consumers.analyst.spec_policy import repair_arguments
from contracts import events as ev
from contracts.fields import SLUG_PATTERN, check_clone_url_shape
from contracts.spec import (
    BotCheck,
    ConfigVar,
    HttpCheck,
    HttpStep,
    Integration,
    Persistence,
    PersistenceKind,
    ProjectSpec,
    Schedule,
    ServiceKind,
    WorkerCheck,
)
from infra.repo_urls import ForeignCloneUrl, ForgeSettings, check_clone_url

SPEC = ProjectSpec(name="Notes", slug="notes-api", summary="Notes", kinds=(ServiceKind.HTTP,))


def deploy(**change: Any) -> ev.DeployRequested:
    fields: dict[str, Any] = {
        "correlation_id": uuid.uuid4(),
        "actor": "coordinator",
        "project_id": uuid.uuid4(),
        "spec": SPEC,
        "clone_url": "git://127.0.0.1:9418/notes-api.git",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "server_name": "local",
        "host": "127.0.0.1",
        "port": 20001,
    }
    return ev.DeployRequested(**{**fields, **change})


def test_the_slug_rule_is_the_analysts() -> None:
    assert ANALYST_SLUG_PATTERN.pattern == SLUG_PATTERN


@pytest.mark.parametrize(
    "commit",
    ["../../../etc", "abc123", "0123456789ABCDEF0123456789ABCDEF01234567", "a" * 41, "a" * 39, ""],
)
def test_a_deploy_needs_a_full_lowercase_commit_id(commit: str) -> None:
    with pytest.raises(ValidationError, match="commit"):
        deploy(commit=commit)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://x-access-token:ghp_secret@github.com/acme/a.git", "credentials"),
        ("https://ghp_secret@github.com/acme/a.git", "credentials"),
        ("ssh://git:hunter2@github.com/acme/a.git", "credentials"),
        ("http://github.com/acme/a.git", "scheme"),
        ("ext::sh -c touch% /tmp/pwned", "whitespace"),
        ("ext::sh", "scheme"),
        ("git://127.0.0.1/a.git\n--upload-pack=touch", "whitespace"),
        ("/srv/git/a.git", "scheme"),
        ("https:///a.git", "host"),
        ("git://127.0.0.1/", "path"),
    ],
)
def test_clone_urls_with_credentials_odd_schemes_or_whitespace_are_refused(
    url: str, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        check_clone_url_shape(url)
    with pytest.raises(ValidationError):
        deploy(clone_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "git://127.0.0.1:9418/notes-api.git",
        "https://github.com/acme/notes-api.git",
        "ssh://git@github.com/acme/notes-api.git",
        "file:///srv/git/notes-api.git",
    ],
)
def test_the_urls_the_pipeline_produces_are_accepted(url: str) -> None:
    assert deploy(clone_url=url).clone_url == url


def test_slugs_variable_names_and_sizes_are_bounded() -> None:
    with pytest.raises(ValidationError, match="slug"):
        ev.ProvisionRequested(
            correlation_id=uuid.uuid4(), actor="c", project_id=uuid.uuid4(), slug="../etc"
        )
    for name in ("api_key", "1TOKEN", "A-B", "A" * 65, "PATH/../X", ""):
        with pytest.raises(ValidationError, match="name"):
            ConfigVar(name=name)
    assert ConfigVar(name="TELEGRAM_BOT_TOKEN").name == "TELEGRAM_BOT_TOKEN"
    with pytest.raises(ValidationError, match="name"):
        ev.SecretStored(
            correlation_id=uuid.uuid4(),
            actor="api:x",
            project_id=uuid.uuid4(),
            name="../../platform/github",
            vault_path="p",
        )
    with pytest.raises(ValidationError, match="answers"):
        ev.SpecRequested(
            correlation_id=uuid.uuid4(),
            actor="c",
            project_id=uuid.uuid4(),
            description="d",
            answers=("a",) * 201,
        )
    with pytest.raises(ValidationError, match="summary"):
        ProjectSpec.model_validate({**SPEC.model_dump(), "summary": "x" * 16001})


def test_an_archive_request_from_an_old_producer_names_nobody() -> None:
    """Tolerant reader: a v1 archive request still decodes, with no acting user."""
    old = ev.ProjectArchiveRequested.model_validate(
        {"correlation_id": str(uuid.uuid4()), "actor": "cli", "project_id": str(uuid.uuid4())}
    )
    assert old.user_id is None


def test_the_analyst_repairs_variable_names_a_model_gets_wrong() -> None:
    repaired = repair_arguments(
        {"slug": "notes-api", "config": [{"name": "api-key"}, {"name": "2fa_secret"}, "odd"]}
    )
    assert repaired["config"] == [{"name": "API_KEY"}, {"name": "FA_SECRET"}, "odd"]


LOCAL = ForgeSettings(host="local", daemon_url="git://127.0.0.1:9418")
GITHUB = ForgeSettings(host="github", github_owner="acme")


@pytest.mark.parametrize(
    ("url", "forge"),
    [
        ("git://127.0.0.1:9418/notes-api.git", LOCAL),
        ("git://127.0.0.1/notes-api.git", LOCAL),  # 9418 is git's default port
        ("https://github.com/acme/notes-api.git", GITHUB),
        ("https://github.com/ACME/notes-api.git", GITHUB),
        ("ssh://git@github.com/acme/notes-api.git", GITHUB),
        (
            "https://ghe.example/acme/notes-api.git",
            ForgeSettings(
                host="github", github_owner="acme", github_api_url="https://ghe.example/api/v3"
            ),
        ),
    ],
)
def test_urls_on_the_configured_forge_pass(url: str, forge: ForgeSettings) -> None:
    assert check_clone_url(url, forge) == url


@pytest.mark.parametrize(
    ("url", "forge"),
    [
        ("git://evil.example:9418/notes-api.git", LOCAL),
        ("git://127.0.0.1:9419/notes-api.git", LOCAL),
        ("https://127.0.0.1/notes-api.git", LOCAL),
        ("git://127.0.0.1:9418/other/notes-api.git", LOCAL),
        ("git://127.0.0.1:9418/../notes-api.git", LOCAL),
        ("file:///tmp/attacker.git", LOCAL),
        ("https://github.com/attacker/notes-api.git", GITHUB),
        ("https://github.com/acme/../attacker/x.git", GITHUB),
        ("https://github.com.evil.example/acme/notes-api.git", GITHUB),
        ("git://github.com/acme/notes-api.git", GITHUB),
        ("https://x:y@github.com/acme/notes-api.git", GITHUB),
        ("https://github.com/acme/notes-api.git", ForgeSettings(host="github")),
    ],
)
def test_urls_off_the_forge_are_refused_with_what_was_expected(
    url: str, forge: ForgeSettings
) -> None:
    with pytest.raises(ForeignCloneUrl) as refused:
        check_clone_url(url, forge)
    assert re.search(r"expected|credentials|relative|ORCH_REPO", str(refused.value))


def test_file_urls_are_on_the_local_forge_only_under_its_directory(tmp_path: Path) -> None:
    forge = ForgeSettings(host="local", local_base=tmp_path / "git")
    inside = (tmp_path / "git" / "notes-api.git").as_uri()
    assert check_clone_url(inside, forge) == inside
    with pytest.raises(ForeignCloneUrl):
        check_clone_url((tmp_path / "elsewhere" / "notes-api.git").as_uri(), forge)
    with pytest.raises(ForeignCloneUrl):
        check_clone_url((tmp_path / "git" / "sub" / "notes-api.git").as_uri(), forge)


def test_the_forge_is_read_from_the_repo_consumers_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_REPO_HOST", "github")
    monkeypatch.setenv("ORCH_REPO_GITHUB_OWNER", "acme")
    forge = ForgeSettings()
    assert (forge.host, forge.github_owner) == ("github", "acme")


@pytest.mark.parametrize(
    "path",
    [
        "expenses",  # relative to nothing: the deployer would glue it to the port
        "//evil.example/x",
        "http://evil.example/x",
        "/@169.254.169.254/latest",
        "/a\\b",
        "/items /x",
        "/items/\n",
        "/items/{id",
        "/items/{Id}",
    ],
)
def test_a_check_path_that_could_leave_the_project_is_refused(path: str) -> None:
    """Checks run against the project's own URL only: a path never names another host."""
    with pytest.raises(ValidationError):
        HttpStep(path=path)


def test_a_check_path_with_placeholders_and_a_query_is_accepted() -> None:
    assert HttpStep(path="/items/{id}?expand=all&by=a@b").path == "/items/{id}?expand=all&by=a@b"


def test_checks_are_a_tagged_union_that_round_trips_through_json() -> None:
    spec = SPEC.model_copy(
        update={
            "checks": (
                HttpCheck(
                    name="create then read",
                    steps=(
                        HttpStep(method="POST", path="/notes", body={"t": "x"},
                                 expect_status=201, capture={"id": "id"}),
                        HttpStep(path="/notes/{id}", expect_json={"id": "{id}"}),
                    ),
                ),
                BotCheck(name="greets", message="/start", reply_pattern=r"^Hi"),
                WorkerCheck(name="ran", path="/worker/status", expect_json={"last_ok": True}),
            )
        }
    )  # fmt: skip
    again = ProjectSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert [type(check) for check in again.checks] == [HttpCheck, BotCheck, WorkerCheck]


@pytest.mark.parametrize(
    "change",
    [
        {"reply_pattern": "(unclosed"},
        {"message": ""},
        {"message": "x" * 5000},
    ],
)
def test_a_bot_check_must_be_usable(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BotCheck(**{"name": "n", "message": "/start", "reply_pattern": "Hi", **change})


def test_check_sizes_are_bounded() -> None:
    """A model cannot put megabytes on the bus through a check body or a hundred captures."""
    with pytest.raises(ValidationError):
        HttpStep(path="/x", body={"blob": "x" * 9000})
    with pytest.raises(ValidationError):
        HttpStep(path="/x", capture={f"c{i}": "id" for i in range(21)})
    with pytest.raises(ValidationError):
        HttpStep(path="/x", capture={"id": "../etc"})
    with pytest.raises(ValidationError):
        HttpCheck(name="too long", steps=tuple(HttpStep(path="/x") for _ in range(21)))


def schedule(**change: Any) -> Schedule:
    return Schedule(**{"name": "daily_digest", "action": "send the digest", **change})


@pytest.mark.parametrize("cron", ["0 9 * * *", "*/15 * * * *", "0 9 * * 1-5", "0,30 8-18 * * *"])
def test_a_schedule_takes_a_five_field_cron_expression(cron: str) -> None:
    assert schedule(cron=cron).cron == cron


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("0 9 * *", "has 5 fields"),
        ("0 0 9 * * *", "has 5 fields"),
        ("60 * * * *", "minute field '60' is outside 0-59"),
        ("0 24 * * *", "hour field '24' is outside 0-23"),
        ("0 9 * * MON", "names such as MON are not accepted"),
        ("@daily", "has 5 fields"),
        ("*/0 * * * *", "step of 0"),
        ("0 18-9 * * *", "runs backwards"),
    ],
)
def test_a_bad_cron_expression_is_refused_with_what_is_wrong(cron: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        schedule(cron=cron)


def test_a_schedule_has_exactly_one_timing_and_a_sane_interval() -> None:
    assert schedule(every_seconds=3600).every_seconds == 3600
    for timing in ({}, {"cron": "0 9 * * *", "every_seconds": 3600}):
        with pytest.raises(ValidationError, match="exactly one of cron"):
            schedule(**timing)
    with pytest.raises(ValidationError, match="greater than or equal to 60"):
        schedule(every_seconds=5)
    with pytest.raises(ValidationError, match="pattern"):
        schedule(name="Daily Digest", every_seconds=3600)


def integration(**change: Any) -> Integration:
    fields = {
        "name": "OpenWeather",
        "base_url": "https://api.openweathermap.org/data/2.5",
        "env_vars": ["OPENWEATHER_API_KEY"],
        **change,
    }
    return Integration(**fields)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://api.openweathermap.org", "must be https://"),
        ("ftp://api.example.com", "must be https://"),
        ("api.example.com/v1", "must be https://"),
        ("https://", "needs a host"),
        ("https://key:secret@api.example.com", "may not carry credentials"),
        ("https://api.example.com/v1?appid=abc", "no query"),
        ("https://api.example.com/ v1", "whitespace"),
    ],
)
def test_an_integration_base_url_is_https_without_credentials(url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        integration(base_url=url)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("openweather_api_key", "pattern"),
        ("OPENWEATHER-API-KEY", "pattern"),
        ("1PASSWORD_TOKEN", "pattern"),
        ("AKIAIOSFODNN7EXAMPLE", "looks like a secret value"),
        ("SK_LIVE_4EC39HQLYJWDARJTT1ZDP7DC", "looks like a secret value"),
    ],
)
def test_an_integration_names_its_variables_and_never_holds_a_value(
    name: str, problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem) as refused:
        integration(env_vars=[name])
    # The message (what the analyst feeds back to the model) does not repeat a pasted key.
    assert name not in refused.value.errors()[0]["msg"]
    assert integration(env_vars=["OAUTH2_CLIENT_ID", "S3_BUCKET"]).env_vars == (
        "OAUTH2_CLIENT_ID",
        "S3_BUCKET",
    )


def test_persistence_is_one_of_three_kinds() -> None:
    assert Persistence(kind="postgres", stores="books").kind is PersistenceKind.POSTGRES
    with pytest.raises(ValidationError, match="'none', 'sqlite' or 'postgres'"):
        Persistence(kind="mongodb")


def test_an_integrations_variables_are_secrets_of_the_spec_and_repair_upcases_them() -> None:
    spec = SPEC.model_copy(
        update={
            "config": (ConfigVar(name="TOKEN", secret=True),),
            "integrations": (integration(env_vars=["OPENWEATHER_API_KEY", "TOKEN"]),),
        }
    )
    assert spec.secret_names == ("TOKEN", "OPENWEATHER_API_KEY")
    repaired = repair_arguments(
        {"integrations": [{"name": "X", "base_url": "https://x.io", "env_vars": ["x_api-key"]}]}
    )
    assert repaired["integrations"][0]["env_vars"] == ["X_API_KEY"]
