"""The coder image's sources are enough for the container's entry points to start.

The image holds only `IMAGE_SOURCES` of this repository (and `CODER_REQUIREMENTS`, which has no
qdrant-client), so a module the agent imports that is not in that list fails every container
run at start ("exited with status 1 without a result"), which only a 45-s image build and a
real dockerd would otherwise show. Each case copies the sources alone into a directory and
imports an entry module there in a fresh interpreter that sees only them and the installed
libraries (`-S`: no `.pth` files, so not the editable install of the whole repository).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from consumers.engineer.coder_image import IMAGE_SOURCES, ROOT


@pytest.fixture(scope="module")
def image_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source_root = tmp_path_factory.mktemp("coder-image") / "src"
    for relative in IMAGE_SOURCES:
        source, target = ROOT / relative, source_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    return source_root


@pytest.mark.parametrize(
    "module", ["consumers.engineer.container_entry", "consumers.engineer.container_tests"]
)
def test_an_entry_point_imports_from_the_image_sources_alone(
    image_sources: Path, module: str
) -> None:
    script = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = [{str(image_sources)!r}, {sysconfig.get_paths()['purelib']!r}]\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", script], cwd=image_sources, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout))
    # The store stays on the host: the agent reads memory hits, never Qdrant.
    assert "qdrant_client" not in loaded
    assert "infra.memory" not in loaded
