"""Prepare a release in one remote Python start: directories, checkout, deploy.json, `.env`.

Run as the project's user by roles/release_checkout: `python3 -c <this>`, a JSON request on
stdin (it holds the rendered `.env`, so the task is `no_log` and nothing here prints a value
from it). Prints one JSON object on stdout and exits 0; a failure is reported in its `error`
field for the play to raise, so its message survives `no_log`.

Every module run costs the target a Python start and AnsiballZ (about 0.34 s of CPU); this
script replaces eight of them (`install -d`, `stat` of `current`, `git`, `slurp` of deploy.json
and of requirements.txt, the `.env` copy's `stat` and `copy`) and, for a repeated deploy, the
supervisor status and the health probe too. Each step is idempotent and says whether it
changed anything, so a repeated deploy reports "unchanged" honestly.

Request fields: project_root, release_dir, current_link, commit, clone_url, env_file,
missing_secrets, optional `serving` ({pid_file, health_host, port}: when `current` already
points at `release_dir`, check whether it serves and, if so, touch nothing).
Answer fields: changed, previous_release_dir, serving, manifest, required_missing,
requirements (text or null), own_venv (`.venv` is a directory of the release's own, not a
link to a shared venv), error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any

PROJECT_DIRS = ("", "releases", "bin", "logs", "run")
DIR_MODE = 0o750
#: The same rule roles/release_checkout/tasks/manifest_check.yml asserts on the controller.
PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._~%/?=&-]*$")


class Refused(Exception):
    """A failure to report in the answer's `error` (never carrying a secret)."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Refused(f"git {args[0] if args[0] != '-C' else args[2]}: {done.stderr.strip()}")
    return done.stdout.strip()


def _directories(root: str) -> bool:
    changed = False
    for sub in PROJECT_DIRS:
        path = os.path.join(root, sub) if sub else root
        if not os.path.isdir(path):
            os.mkdir(path, DIR_MODE)
            changed = True
        if os.stat(path).st_mode & 0o7777 != DIR_MODE:
            os.chmod(path, DIR_MODE)
            changed = True
    return changed


def _checkout(release_dir: str, clone_url: str, commit: str) -> bool:
    """`release_dir` at `commit` with no local modification (the natural key of a deploy)."""
    if os.path.isdir(os.path.join(release_dir, ".git")):
        head = subprocess.run(
            ["git", "-C", release_dir, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if head == commit:
            if not _git("-C", release_dir, "status", "--porcelain", "--untracked-files=no"):
                return False
            _git("-C", release_dir, "reset", "--quiet", "--hard", commit)
            return True
        _git(
            "-C",
            release_dir,
            "fetch",
            "--quiet",
            "--tags",
            clone_url,
            "+refs/heads/*:refs/remotes/origin/*",
        )
    else:
        _git("clone", "--quiet", "--no-checkout", clone_url, release_dir)
    _git("-C", release_dir, "checkout", "--quiet", "--force", "--detach", commit)
    if os.path.exists(os.path.join(release_dir, ".gitmodules")):
        _git("-C", release_dir, "submodule", "update", "--quiet", "--init", "--recursive")
    return True


def _manifest(release_dir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(release_dir, "deploy.json"), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as error:
        raise Refused(f"the release's deploy.json could not be read: {error}") from None
    if not isinstance(manifest, dict):
        raise Refused("the release's deploy.json must be a JSON object")
    return manifest


def _serves(manifest: dict[str, Any], serving: dict[str, Any]) -> bool:
    """The supervisor in the pid file runs and the health endpoint answers 200."""
    status = subprocess.run(
        ["start-stop-daemon", "--status", "--pidfile", serving["pid_file"]], check=False
    )
    path = manifest.get("health_path", "/health")
    if status.returncode != 0 or not isinstance(path, str):
        return False
    if not PLAIN_PATH.match(path) or "//" in path:
        return False
    url = f"http://{serving['health_host']}:{int(serving['port'])}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _write_env(path: str, content: str) -> bool:
    """Write `.env` 0600 from the first byte on, atomically; unchanged content is left alone."""
    try:
        with open(path, encoding="utf-8") as handle:
            same = handle.read() == content
        if same and os.stat(path).st_mode & 0o7777 == 0o600:
            return False
    except OSError:
        pass
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".env.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return True


def prepare(request: dict[str, Any], answer: dict[str, Any]) -> None:
    release_dir = request["release_dir"]
    answer["changed"] = _directories(request["project_root"])
    current = request["current_link"]
    previous = os.path.realpath(current) if os.path.islink(current) else ""
    answer["previous_release_dir"] = previous
    serving = request.get("serving")
    if serving and previous == release_dir:
        manifest = _manifest(release_dir)
        if _serves(manifest, serving):
            answer.update(serving=True, manifest=manifest)
            return
    answer["changed"] = (
        _checkout(release_dir, request["clone_url"], request["commit"]) or answer["changed"]
    )
    manifest = _manifest(release_dir)
    answer["manifest"] = manifest
    optional = manifest.get("optional_secrets") or []
    required = [name for name in request["missing_secrets"] if name not in optional]
    answer["required_missing"] = required
    if required:
        return  # the play stops before any `.env` is written
    if _write_env(os.path.join(release_dir, ".env"), request["env_file"]):
        answer["changed"] = True
    venv = os.path.join(release_dir, ".venv")
    answer["own_venv"] = os.path.isdir(venv) and not os.path.islink(venv)
    try:
        with open(os.path.join(release_dir, "requirements.txt"), encoding="utf-8") as handle:
            answer["requirements"] = handle.read()
    except OSError:
        answer["requirements"] = None


def main() -> None:
    answer: dict[str, Any] = {
        "changed": False,
        "previous_release_dir": "",
        "serving": False,
        "manifest": None,
        "required_missing": [],
        "requirements": None,
        "own_venv": False,
        "error": "",
    }
    try:
        prepare(json.load(sys.stdin), answer)
    except Refused as error:
        answer["error"] = str(error)
    print(json.dumps(answer))


main()
