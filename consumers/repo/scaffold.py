"""Renders a spec into a repository from Jinja templates: common files plus each kind's modules.

Every generated service is one FastAPI process serving `GET /health`, so the deployer checks a
bot or a worker the same way as an API. The common templates (`templates/common/`) hold that
process, its configuration, packaging and CI; each kind's directory (`templates/<kind>/`) adds
its modules and tests, which `app/main.py` starts with the server. A spec combining kinds renders
the common files once and every kind's modules.

Template files are named after the file they produce plus `.j2`; a leading dot in a path part
is spelled `dot` (`dot.env.example.j2`) so packaging tools that skip hidden files keep them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import jinja2

from contracts.spec import ProjectSpec, ServiceKind

from .ports import Scaffold
from .scaffold_context import build_context, docstring_text, effective_kinds, python_literal

TEMPLATES_DIR: Final = Path(__file__).parent / "templates"

#: Files every service has, rendered from `templates/common/`.
COMMON_FILES: Final = (
    "app/__init__.py",
    "app/__main__.py",
    "app/settings.py",
    "app/main.py",
    "app/healthcheck.py",
    "tests/conftest.py",
    "tests/test_health.py",
    "requirements.txt",
    "pytest.ini",
    "Dockerfile",
    ".dockerignore",
    ".gitignore",
    "compose.yaml",
    ".github/workflows/ci.yml",
    ".env.example",
    "deploy.json",
    "README.md",
)

#: Files rendered from `templates/common/` only when the spec has entities.
ENTITY_FILES: Final = ("app/models.py", "app/store.py", "tests/test_store.py")

#: Files rendered from `templates/common/` only when the spec carries executable checks.
CHECK_FILES: Final = ("tests/test_acceptance.py",)

#: Each kind's own files, rendered from `templates/<kind>/`; a `True` flag means the file is
#: rendered only when the spec has entities (an API test file without entities has no tests).
KIND_FILES: Final[dict[ServiceKind, tuple[tuple[str, bool], ...]]] = {
    ServiceKind.HTTP: (("app/api.py", False), ("tests/test_api.py", True)),
    ServiceKind.TELEGRAM_BOT: (("app/bot.py", False), ("tests/test_bot.py", False)),
    ServiceKind.WORKER: (("app/worker.py", False), ("tests/test_worker.py", False)),
}


def template_name(directory: str, target: str) -> str:
    """The template that produces `target` (a repository path) in `directory`."""
    parts = [f"dot{part}" if part.startswith(".") else part for part in target.split("/")]
    return f"{directory}/{'/'.join(parts)}.j2"


def planned_files(spec: ProjectSpec) -> list[tuple[str, str]]:
    """(template, target path) pairs for `spec`, primary kind first."""
    files = [(template_name("common", path), path) for path in COMMON_FILES]
    if spec.entities:
        files += [(template_name("common", path), path) for path in ENTITY_FILES]
    if spec.checks:
        files += [(template_name("common", path), path) for path in CHECK_FILES]
    for kind in effective_kinds(spec):
        for path, needs_entities in KIND_FILES[kind]:
            if spec.entities or not needs_entities:
                files.append((template_name(kind.value, path), path))
    return files


class JinjaScaffolder:
    """The project's `Scaffolder`: renders the shipped templates (or those in `templates_dir`)."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self._env = jinja2.Environment(  # noqa: S701 - renders Python, YAML and Markdown, never HTML
            loader=jinja2.FileSystemLoader(templates_dir),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        # Free text from the spec reaches generated code only as a Python literal.
        self._env.filters["py"] = python_literal
        self._env.filters["doc"] = docstring_text

    def render(self, spec: ProjectSpec) -> Scaffold:
        context = build_context(spec)
        files = {
            target: self._env.get_template(template).render(context)
            for template, target in planned_files(spec)
        }
        return Scaffold(files=files)
