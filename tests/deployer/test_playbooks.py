"""The deploy playbooks parse, and the .env format survives the round trip to the supervisor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.deployer.env_file import render_env
from contracts.spec import ConfigVar, Integration, ProjectSpec, ServiceKind
from infra.playbook_runner import PLAYBOOK_DIR

from .conftest import read_env_file


@pytest.mark.parametrize(
    "playbook",
    ["deploy_process.yml", "deploy_compose.yml", "stop_project.yml", "prepare_server.yml"],
)
def test_playbook_passes_syntax_check(playbook: str) -> None:
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [str(ansible_playbook), "--syntax-check", "-i", "target,", playbook],
        cwd=PLAYBOOK_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _spec(value_default: str) -> ProjectSpec:
    return ProjectSpec(
        name="Round trip",
        slug="round-trip",
        summary="x",
        kinds=(ServiceKind.HTTP,),
        config=(
            ConfigVar(name="PLAIN", default=value_default),
            ConfigVar(name="TOKEN", secret=True),
            ConfigVar(name="OPTIONAL_TOKEN", secret=True),
        ),
    )


# Any UTF-8 text but NUL, which no environment variable can hold.
ENV_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


@given(default=ENV_TEXT, secret=ENV_TEXT)
def test_env_values_round_trip_through_the_supervisor(
    tmp_path_factory: pytest.TempPathFactory, default: str, secret: str
) -> None:
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text(
        render_env(
            _spec(default),
            port=8080,
            bind_host="0.0.0.0",
            version="abc",
            secrets={"TOKEN": secret},
        ),
        encoding="utf-8",
    )
    assert read_env_file(path) == {
        "PLAIN": default,
        "TOKEN": secret,
        "OPTIONAL_TOKEN": "",
        "PORT": "8080",
        "HOST": "0.0.0.0",
        "APP_VERSION": "abc",
    }


def test_platform_variables_override_the_spec() -> None:
    spec = ProjectSpec(
        name="x",
        slug="xx-yy",
        summary="x",
        kinds=(ServiceKind.HTTP,),
        config=(ConfigVar(name="PORT", default="1"),),
    )
    rendered = render_env(spec, port=9, bind_host="127.0.0.1", version="v", secrets={})
    assert rendered == "PORT='9'\nHOST='127.0.0.1'\nAPP_VERSION='v'\n"


def test_process_mode_data_dir_is_the_platforms() -> None:
    """A service's files live outside the release a deploy replaces; a spec cannot move them."""
    spec = ProjectSpec(
        name="x",
        slug="data-keeper",
        summary="x",
        kinds=(ServiceKind.HTTP,),
        config=(ConfigVar(name="DATA_DIR", default="/tmp/elsewhere"),),
    )
    rendered = render_env(
        spec, port=9, bind_host="127.0.0.1", version="v", secrets={}, data_dir="/srv/o/x/data"
    )
    assert "DATA_DIR='/srv/o/x/data'\n" in rendered
    assert "/tmp/elsewhere" not in rendered


def test_an_integrations_key_reaches_the_env_file_even_when_config_omits_it() -> None:
    spec = ProjectSpec(
        name="x",
        slug="weather-bot",
        summary="x",
        kinds=(ServiceKind.HTTP,),
        integrations=(
            Integration(
                name="OpenWeather",
                base_url="https://api.openweathermap.org/data/2.5",
                env_vars=("OPENWEATHER_API_KEY",),
            ),
        ),
    )
    rendered = render_env(
        spec, port=9, bind_host="127.0.0.1", version="v", secrets={"OPENWEATHER_API_KEY": "k-1"}
    )
    assert rendered.startswith("OPENWEATHER_API_KEY='k-1'\n")
