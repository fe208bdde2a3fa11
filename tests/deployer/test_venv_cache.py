"""The deploy role's venv cache (roles/release_venv/files/venv_cache.py), run as on a server.

The script decides which releases share a venv: the same requirements (in any order, with any
comments) and the same Python share one, built once; anything it cannot vouch for (a pip option,
a URL, a path) gets no shared venv, and a build that died halfway is not used. The deploy tests
(test_process_deploy.py, test_isolation.py) show releases running from it over real SSH.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from infra.playbook_runner import PLAYBOOK_DIR

SCRIPT = PLAYBOOK_DIR / "roles" / "release_venv" / "files" / "venv_cache.py"


def venv_for(cache: Path, requirements: str) -> str:
    """What the role's task does: the script's text as `python3 -c`, requirements on stdin."""
    result = subprocess.run(
        ["python3", "-c", SCRIPT.read_text(), str(cache)],
        input=requirements, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module, as on a server: each venv build costs seconds, so the tests
    reuse what an earlier one built (each still builds what it needs when run alone)."""
    return tmp_path_factory.mktemp("venvs")


def test_same_requirements_share_one_venv_built_once(cache: Path) -> None:
    first = venv_for(cache, "pip\n# the installer itself\n")
    marker = Path(first) / ".complete"
    built_at = marker.stat().st_mtime_ns

    again = venv_for(cache, "# reordered, re-commented\n\npip  # already there\n")

    assert again == first
    assert marker.stat().st_mtime_ns == built_at  # not rebuilt
    assert Path(first).parent == cache
    assert (Path(first) / "bin" / "python").exists()
    # Group and others may read and run it, never write.
    for path in (Path(first), Path(first) / "bin", Path(first) / "lib"):
        assert path.stat().st_mode & 0o022 == 0, path


def test_other_requirements_get_another_venv(cache: Path) -> None:
    assert venv_for(cache, "pip\n") != venv_for(cache, "")


def test_options_urls_and_paths_are_not_cached(tmp_path: Path) -> None:
    for requirements in (
        "--index-url https://example.invalid/simple\nrequests\n",
        "-e .\n",
        "app @ https://example.invalid/app.whl\n",
        "./local/package\n",
    ):
        assert venv_for(tmp_path, requirements) == "", requirements
    assert list(tmp_path.iterdir()) == []


def test_a_build_that_died_halfway_is_redone(cache: Path) -> None:
    venv = Path(venv_for(cache, ""))
    (venv / ".complete").unlink()
    (venv / "planted").write_text("left by a build that was killed")

    assert venv_for(cache, "") == str(venv)
    assert (venv / ".complete").is_file()
    assert not (venv / "planted").exists()


def test_a_server_without_the_cache_directory_gets_no_shared_venv(tmp_path: Path) -> None:
    """A server prepared before the cache existed: the release builds its own venv, as before."""
    assert venv_for(tmp_path / "absent", "pip\n") == ""
    assert not (tmp_path / "absent").exists()
