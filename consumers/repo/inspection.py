"""Reads a checked-out repository and says how to run it: a spec, or what is missing.

Triggered by an adoption (`consumers/repo/adoption.py`); a pure function over a directory, so
it is tested without git. Everything in the checkout is hostile: nothing here executes, imports
or evaluates it. Files are read only by the fixed names below (or the relative paths
`deploy.json` names, checked to stay inside the checkout), never through a symbolic link, and
at most `MAX_FILE_BYTES` each; directories are listed at most `MAX_ENTRIES` entries deep.

What a runnable repository needs is what the deploy path needs (`infra/ansible/README.md`):
a Python service with `requirements.txt`, a start command (`deploy.json`'s `start`, or one
recognised from `app/__main__.py`, `main.py`, `app.py`, a `Procfile` or a Dockerfile's exec-form
`CMD`) and its own pytest tests (the engineer runs them in the sandbox before any deploy).
Variables come from `.env.example`: names that look like secrets (or whose example value looks
like a credential) become the spec's secrets, so the deploy waits in `awaiting_secrets` until
they are stored; other example values become defaults.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from contracts.fields import MAX_ITEMS, MAX_TEXT, VAR_NAME_PATTERN
from contracts.spec import ConfigVar, ProjectSpec, ServiceKind

#: Largest file the inspector reads; a bigger one is reported, not truncated silently.
MAX_FILE_BYTES = 64 * 1024
#: Most directory entries looked at when searching for tests.
MAX_ENTRIES = 2000
DEFAULT_HEALTH_PATH = "/health"
#: Set by the deployer for every release (`consumers/deployer/env_file.py`): never from the repo.
DEPLOYER_VARIABLES = frozenset({"PORT", "HOST", "APP_VERSION", "DATA_DIR"})
_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PASS|API_?KEY|PRIVATE|CREDENTIAL|AUTH|DSN|DATABASE_URL|"
    r"_KEY$|^KEY$)"
)
#: Example values that are credentials whatever the variable's name says.
_CREDENTIAL_VALUE = re.compile(
    r"(^(sk-|ghp_|gho_|github_pat_|xox[abpr]-|AKIA|glpat-|AIza)|://[^/\s:@]+:[^/\s@]+@|"
    r"-----BEGIN|^\d{6,}:[A-Za-z0-9_-]{30,}$|^[A-Za-z0-9+/_=-]{32,}$)"
)
_HEALTH_PATH = re.compile(r"^/[A-Za-z0-9._~%/?=&-]*$")
_VAR_NAME = re.compile(VAR_NAME_PATTERN)
_MAX_START_PARTS = 20
_MAX_START_PART = 200


@dataclass(frozen=True)
class Runnable:
    """The repository can run: its spec, the `deploy.json` to add (None: it has one)."""

    spec: ProjectSpec
    deploy_json: str | None
    findings: tuple[str, ...]


@dataclass(frozen=True)
class Unrunnable:
    """The repository cannot run as it is; `missing` says what to add, one item each."""

    missing: tuple[str, ...]
    findings: tuple[str, ...] = ()

    def explanation(self, url: str) -> str:
        lines = [f"{url} cannot be deployed as it is. Missing:"]
        lines += [f"- {item}" for item in self.missing]
        return "\n".join(lines)


Inspection = Runnable | Unrunnable


class _Unreadable(Exception):
    """A file the inspector will not read (a link, too large, outside the checkout)."""


@dataclass
class _Notes:
    missing: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def inspect_checkout(root: Path, *, slug: str, source_url: str) -> Inspection:
    """What `root` (a checkout of `source_url`) needs to run, or its spec under `slug`."""
    root = root.resolve()
    notes = _Notes()
    manifest = _manifest(root, notes)
    language = _language(root)
    notes.findings.append(f"language: {language or 'not recognised'}")
    if language != "Python":
        notes.missing.append(
            "a Python service: the deploy runs Python processes, and no requirements.txt, "
            "pyproject.toml or Python module was found"
            + (f" (this looks like {language})" if language else "")
        )
    if not _is_file(root, "requirements.txt"):
        notes.missing.append(
            "requirements.txt at the top level (the deploy and the tests install from it; it "
            "may be empty)"
        )
    start = _start(root, manifest, notes)
    if not _has_tests(root):
        notes.missing.append(
            "tests: test_*.py files (pytest) under tests/ or at the top level; the repository's "
            "own tests run in the sandbox before anything is deployed"
        )
    health = _health_path(manifest, notes)
    config = _variables(root, manifest, notes)
    if notes.missing:
        return Unrunnable(tuple(notes.missing), tuple(notes.findings))
    assert start is not None
    deploy_json = None
    if manifest is None:
        deploy_json = json.dumps(
            {"start": start, "health_path": health, "requirements": "requirements.txt"},
            indent=2,
        ) + "\n"
        notes.findings.append("deploy.json written from the recognised start command")
    name = _repository_name(source_url) or slug
    spec = ProjectSpec(
        name=name[:200],
        slug=slug,
        summary=_summary(root, source_url),
        kinds=(ServiceKind.HTTP,),
        config=config,
        acceptance_criteria=(f"GET {health} answers once the service is deployed",),
    )
    return Runnable(spec=spec, deploy_json=deploy_json, findings=tuple(notes.findings))


# ---------------------------------------------------------------- reading, safely


def _safe_path(root: Path, relative: str) -> Path:
    """`root/relative` if every part of it is a real entry inside `root`, never a link."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", ".") for p in parts):
        raise _Unreadable(f"{relative!r} is not a plain relative path")
    current = root
    for part in parts:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _Unreadable(f"{relative} cannot be read: {exc.strerror}") from exc
        if stat.S_ISLNK(info.st_mode):
            raise _Unreadable(f"{relative} is a symbolic link; links are not followed")
    return current


def _read(root: Path, relative: str) -> str | None:
    """The text of a regular file inside `root`; None when absent; `_Unreadable` otherwise."""
    try:
        path = _safe_path(root, relative)
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise _Unreadable(f"{relative} is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise _Unreadable(
            f"{relative} is {info.st_size} bytes; at most {MAX_FILE_BYTES} bytes are read"
        )
    # O_NOFOLLOW: the entry checked above cannot be swapped for a link before it is opened.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    return data[:MAX_FILE_BYTES].decode("utf-8", errors="replace")


def _is_file(root: Path, relative: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(_safe_path(root, relative)).st_mode)
    except (OSError, _Unreadable):
        return False


def _is_dir(root: Path, relative: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(_safe_path(root, relative)).st_mode)
    except (OSError, _Unreadable):
        return False


def _entries(root: Path, relative: str = "") -> list[tuple[str, bool]]:
    """(name, is a real file) of a directory's entries, bounded, links never followed."""
    try:
        directory = _safe_path(root, relative) if relative else root
        with os.scandir(directory) as scan:
            found = []
            for index, entry in enumerate(scan):
                if index >= MAX_ENTRIES:
                    break
                found.append((entry.name, entry.is_file(follow_symlinks=False)))
            return found
    except (OSError, _Unreadable):
        return []


# ---------------------------------------------------------------- what the repository says


def _manifest(root: Path, notes: _Notes) -> dict[str, object] | None:
    try:
        text = _read(root, "deploy.json")
    except _Unreadable as exc:
        notes.missing.append(f"a readable deploy.json ({exc})")
        return {}
    if text is None:
        return None
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        notes.missing.append(f"a deploy.json that is valid JSON ({exc})")
        return {}
    if not isinstance(manifest, dict):
        notes.missing.append("a deploy.json that is a JSON object")
        return {}
    notes.findings.append("deploy.json found")
    return manifest


def _language(root: Path) -> str | None:
    names = {name for name, is_file in _entries(root) if is_file}
    if names & {"requirements.txt", "pyproject.toml", "setup.py"} or any(
        name.endswith(".py") for name in names
    ) or _is_file(root, "app/__main__.py"):
        return "Python"
    for marker, language in (
        ("package.json", "Node.js"),
        ("go.mod", "Go"),
        ("Cargo.toml", "Rust"),
        ("Gemfile", "Ruby"),
        ("pom.xml", "Java"),
    ):
        if marker in names:
            return language
    return None


def _start(root: Path, manifest: dict[str, object] | None, notes: _Notes) -> list[str] | None:
    if manifest is not None:
        start = manifest.get("start")
        if _valid_start(start):
            assert isinstance(start, list)
            notes.findings.append(f"start: {shlex.join(start)} (deploy.json)")
            return start
        notes.missing.append(
            'deploy.json\'s "start": the command as a list of strings, e.g. '
            '["python", "-m", "app"]'
        )
        return None
    start, origin = _recognised_start(root)
    if start is None:
        notes.missing.append(
            'a start command: deploy.json with "start" (e.g. {"start": ["python", "-m", "app"], '
            '"health_path": "/health"}), or app/__main__.py, main.py or app.py at the top level'
        )
        return None
    notes.findings.append(f"start: {shlex.join(start)} (recognised from {origin})")
    return start


def _valid_start(start: object) -> bool:
    return (
        isinstance(start, list)
        and 0 < len(start) <= _MAX_START_PARTS
        and all(isinstance(part, str) and 0 < len(part) <= _MAX_START_PART for part in start)
        and "\0" not in "".join(start)
    )


def _recognised_start(root: Path) -> tuple[list[str] | None, str]:
    if _is_file(root, "app/__main__.py"):
        return ["python", "-m", "app"], "app/__main__.py"
    for module in ("main.py", "app.py"):
        if _is_file(root, module):
            return ["python", module], module
    for source, command in (("Procfile", _procfile_web), ("Dockerfile", _dockerfile_cmd)):
        try:
            text = _read(root, source)
        except _Unreadable:
            continue
        found = command(text) if text is not None else None
        if found is not None and _valid_start(found) and found[0].startswith("python"):
            return found, source
    return None, ""


def _procfile_web(text: str) -> list[str] | None:
    for line in text.splitlines():
        kind, _, command = line.partition(":")
        if kind.strip() == "web" and command.strip():
            try:
                return shlex.split(command)
            except ValueError:
                return None
    return None


def _dockerfile_cmd(text: str) -> list[str] | None:
    """The exec-form `CMD [...]` of the last stage; the shell form is not guessed at."""
    found = None
    for line in text.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "CMD":
            try:
                value = json.loads(rest)
            except ValueError:
                found = None
                continue
            found = value if isinstance(value, list) else None
    return found


def _has_tests(root: Path) -> bool:
    def is_test(name: str, is_file: bool) -> bool:
        return is_file and name.endswith(".py") and (
            name.startswith("test_") or name.endswith("_test.py")
        )

    if any(is_test(name, is_file) for name, is_file in _entries(root)):
        return True
    return _is_dir(root, "tests") and any(
        is_test(name, is_file) for name, is_file in _entries(root, "tests")
    )


def _health_path(manifest: dict[str, object] | None, notes: _Notes) -> str:
    path = (manifest or {}).get("health_path")
    if path is None:
        notes.findings.append(f"health check: {DEFAULT_HEALTH_PATH} (assumed)")
        return DEFAULT_HEALTH_PATH
    if isinstance(path, str) and _HEALTH_PATH.match(path) and "//" not in path:
        return path
    notes.missing.append(
        'deploy.json\'s "health_path": a plain absolute path such as /health'
    )
    return DEFAULT_HEALTH_PATH


def _variables(
    root: Path, manifest: dict[str, object] | None, notes: _Notes
) -> tuple[ConfigVar, ...]:
    relative = (manifest or {}).get("env_example", ".env.example")
    if not isinstance(relative, str):
        notes.missing.append('deploy.json\'s "env_example": a relative path')
        return ()
    try:
        text = _read(root, relative)
    except _Unreadable as exc:
        notes.missing.append(f"a readable variables file ({exc})")
        return ()
    if text is None:
        notes.findings.append("no .env.example: no variables declared")
        return ()
    config: dict[str, ConfigVar] = {}
    for line in text.splitlines():
        var = _variable(line)
        if var is not None and var.name not in config and len(config) < MAX_ITEMS:
            config[var.name] = var
    secrets = [var.name for var in config.values() if var.secret]
    notes.findings.append(
        f"variables from {relative}: {len(config)}"
        + (f"; secrets: {', '.join(secrets)}" if secrets else "")
    )
    return tuple(config.values())


def _variable(line: str) -> ConfigVar | None:
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    line = line.removeprefix("export ").strip()
    name, equals, value = line.partition("=")
    name = name.strip()
    if not equals or not _VAR_NAME.match(name) or name in DEPLOYER_VARIABLES:
        return None
    value = _unquote(value.strip())
    secret = bool(_SECRET_NAME.search(name)) or bool(_CREDENTIAL_VALUE.search(value))
    default = None if secret or not value else value[:MAX_TEXT]
    return ConfigVar(
        name=name,
        description="from .env.example" + (" (secret, stored in Vault)" if secret else ""),
        default=default,
        secret=secret,
    )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value.split(" #", 1)[0].strip()


def _repository_name(url: str) -> str:
    last = url.rstrip("/").rsplit("/", 1)[-1]
    return last.removesuffix(".git")


def _summary(root: Path, source_url: str) -> str:
    adopted = f"Adopted from {source_url}."
    try:
        readme = _read(root, "README.md")
    except _Unreadable:
        readme = None
    if not readme:
        return adopted
    paragraph: list[str] = []
    for line in readme.splitlines():
        stripped = line.strip()
        if stripped.startswith(("#", "!", "[!", "<", "```")) or not stripped:
            if paragraph:
                break
            continue
        paragraph.append(stripped)
    text = " ".join(paragraph)[:1000]
    return f"{text} ({adopted})" if text else adopted
