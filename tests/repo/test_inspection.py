"""The adoption inspector over checkouts written by the test: what runs, what is missing, and
hostile input (huge files, links out of the checkout, paths that climb) read safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

from consumers.repo.inspection import MAX_FILE_BYTES, Runnable, Unrunnable, inspect_checkout

URL = "git://127.0.0.1:9418/notes-service.git"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def python_service(root: Path, **extra: str) -> Path:
    return write(
        root,
        {
            "deploy.json": json.dumps(
                {"start": ["python", "-m", "app"], "health_path": "/healthz"}
            ),
            "requirements.txt": "",
            "app/__main__.py": "print('serving')\n",
            "tests/test_app.py": "def test_ok():\n    assert True\n",
            ".env.example": (
                "# comment\nPORT=8000\nLOG_LEVEL=info\nGREETING='hello there'\n"
                "STRIPE_API_KEY=\nTELEGRAM_BOT_TOKEN=123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh\n"
                "UPSTREAM=sk-live-abcdef\nexport DATABASE_URL=postgresql://u:p@db/x\n"
            ),
            "README.md": "# Notes\n\nA small notes API for the team.\n\nMore.\n",
            **extra,
        },
    )


def test_python_service_with_deploy_json_and_env_example(tmp_path: Path) -> None:
    found = inspect_checkout(python_service(tmp_path), slug="notes-service", source_url=URL)

    assert isinstance(found, Runnable), found
    assert found.deploy_json is None  # the repository's own deploy.json is used
    spec = found.spec
    assert (spec.name, spec.slug) == ("notes-service", "notes-service")
    assert spec.summary.startswith("A small notes API for the team.")
    config = {var.name: var for var in spec.config}
    assert "PORT" not in config  # set by the deployer
    assert config["LOG_LEVEL"].default == "info" and not config["LOG_LEVEL"].secret
    assert config["GREETING"].default == "hello there"
    assert set(spec.secret_names) == {
        "STRIPE_API_KEY", "TELEGRAM_BOT_TOKEN", "UPSTREAM", "DATABASE_URL"
    }
    # A credential-looking example value never becomes a default.
    assert all(var.default is None for var in spec.config if var.secret)
    assert any("start: python -m app (deploy.json)" in line for line in found.findings)


def test_recognised_start_gets_a_deploy_json(tmp_path: Path) -> None:
    write(tmp_path, {
        "requirements.txt": "fastapi\n",
        "main.py": "",
        "test_main.py": "def test_x():\n    pass\n",
    })
    found = inspect_checkout(tmp_path, slug="plain", source_url=URL)
    assert isinstance(found, Runnable), found
    assert found.deploy_json is not None
    manifest = json.loads(found.deploy_json)
    assert manifest["start"] == ["python", "main.py"]
    assert manifest["health_path"] == "/health"


def test_dockerfile_only_repository_is_explained(tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": 'FROM nginx\nCMD ["nginx", "-g", "daemon off;"]\n'})
    found = inspect_checkout(tmp_path, slug="web", source_url=URL)
    assert isinstance(found, Unrunnable)
    text = found.explanation(URL)
    assert "cannot be deployed" in text
    assert "a Python service" in text
    assert "requirements.txt" in text
    assert "a start command" in text
    assert "tests:" in text


def test_dockerfile_python_cmd_is_a_start(tmp_path: Path) -> None:
    write(tmp_path, {
        "Dockerfile": 'FROM python:3.11\nCMD ["python", "-m", "server"]\n',
        "requirements.txt": "",
        "server.py": "",
        "tests/test_s.py": "def test_s():\n    pass\n",
    })
    found = inspect_checkout(tmp_path, slug="srv", source_url=URL)
    assert isinstance(found, Runnable), found
    assert json.loads(found.deploy_json or "{}")["start"] == ["python", "-m", "server"]


def test_unrunnable_repository_lists_everything_missing(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": "{}", "index.js": ""})
    found = inspect_checkout(tmp_path, slug="node-thing", source_url=URL)
    assert isinstance(found, Unrunnable)
    assert len(found.missing) == 4
    assert "Node.js" in found.missing[0]


def test_huge_files_are_reported_not_read(tmp_path: Path) -> None:
    python_service(tmp_path)
    (tmp_path / ".env.example").write_bytes(b"A=" + b"x" * (MAX_FILE_BYTES + 10))
    (tmp_path / "README.md").write_bytes(b"y" * (50 * MAX_FILE_BYTES))
    found = inspect_checkout(tmp_path, slug="notes-service", source_url=URL)
    assert isinstance(found, Unrunnable)
    assert any(".env.example is" in item and "at most" in item for item in found.missing)


def test_links_out_of_the_checkout_are_not_followed(tmp_path: Path) -> None:
    python_service(tmp_path)
    (tmp_path / ".env.example").unlink()
    os.symlink("/etc/passwd", tmp_path / ".env.example")
    (tmp_path / "README.md").unlink()
    os.symlink("/etc/hostname", tmp_path / "README.md")
    found = inspect_checkout(tmp_path, slug="notes-service", source_url=URL)
    assert isinstance(found, Unrunnable)
    assert any("symbolic link" in item for item in found.missing)
    assert "root:" not in repr(found)


def test_linked_tests_directory_does_not_count(tmp_path: Path) -> None:
    write(tmp_path, {"requirements.txt": "", "main.py": ""})
    outside = tmp_path.parent / "outside-tests"
    write(outside, {"test_elsewhere.py": "def test_x():\n    pass\n"})
    os.symlink(outside, tmp_path / "tests")
    found = inspect_checkout(tmp_path, slug="linked", source_url=URL)
    assert isinstance(found, Unrunnable)
    assert any(item.startswith("tests:") for item in found.missing)


def test_deploy_json_paths_cannot_climb_out(tmp_path: Path) -> None:
    python_service(tmp_path)
    (tmp_path / "deploy.json").write_text(
        json.dumps({"start": ["python", "-m", "app"], "env_example": "../../../etc/passwd"})
    )
    found = inspect_checkout(tmp_path, slug="notes-service", source_url=URL)
    assert isinstance(found, Unrunnable)
    assert any("not a plain relative path" in item for item in found.missing)

    (tmp_path / "deploy.json").write_text(
        json.dumps({"start": ["python"], "env_example": "/etc/passwd"})
    )
    found = inspect_checkout(tmp_path, slug="notes-service", source_url=URL)
    assert isinstance(found, Unrunnable)


def test_bad_deploy_json_and_health_path(tmp_path: Path) -> None:
    python_service(tmp_path)
    (tmp_path / "deploy.json").write_text(
        json.dumps({"start": "python -m app", "health_path": "//evil.example/x"})
    )
    found = inspect_checkout(tmp_path, slug="notes-service", source_url=URL)
    assert isinstance(found, Unrunnable)
    assert any('"start"' in item for item in found.missing)
    assert any('"health_path"' in item for item in found.missing)
    (tmp_path / "deploy.json").write_text("{not json")
    found = inspect_checkout(tmp_path, slug="notes-service", source_url=URL)
    assert isinstance(found, Unrunnable)
    assert any("valid JSON" in item for item in found.missing)
