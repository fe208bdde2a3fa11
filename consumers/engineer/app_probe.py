"""Starts a workspace's app the way the deployer does and asks its health endpoint, once.

Green tests do not prove the service starts: a test suite imports what it tests, while the
deployer runs `deploy.json`'s `start` command (`python -m app`) with HOST and PORT from its
`.env` and waits for `GET <health_path>` to answer 200. A model that breaks a module only the
entry point imports, or a setting only a real start reads, ships a release that never comes
up. So before a commit the engineer runs this script inside the sandbox (no network, the
test venv, the same limits as a test run; `test_runner.PytestRunner.check_app`): it starts
the command on a free loopback port, polls the endpoint for a bounded time, stops the app's
whole process group and exits 0 when the answer was 200, else 1 with the reason and the tail
of the app's output.

The environment is the deployer's with Vault left out: the variables of `.env.example` with
their example values (secrets are empty there, so a bot without its token idles and the app
still serves /health), HOST, PORT and APP_VERSION, and DATA_DIR in a scratch directory.

It runs as `python -I -c <this file's source> WORKSPACE DATA_DIR WAIT_SECONDS` with the venv's
interpreter, or in the coding image as `python -I <this file> ...` (`container_coder.py`, where
the app check gets a container of its own): standard library only, no package imports. `-I`
keeps the workspace (the current directory) off the probe's own import path, so a module the
model wrote (a `json.py` beside `deploy.json`) cannot stand in for the probe and say "healthy".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

#: The start of every reason this check gives, wherever it runs.
NOT_STARTED = (
    "the app does not start the way the deployer starts it (deploy.json's `start`, then GET "
    "on its health path)"
)
_DEFAULT_START = ["python", "-m", "app"]
_POLL_SECONDS = 0.2
_OUTPUT_TAIL_CHARS = 1500


def manifest(workspace: Path) -> tuple[list[str], str]:
    """The start command and health path deploy.json names (the scaffold's defaults when the
    file does not say); ValueError when it names something unusable."""
    path = workspace / "deploy.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if not isinstance(data, dict):
        raise ValueError("deploy.json is not a JSON object")
    start = data.get("start", _DEFAULT_START)
    health = data.get("health_path", "/health")
    if not (isinstance(start, list) and start and all(isinstance(a, str) for a in start)):
        raise ValueError("deploy.json's `start` is not a list of strings")
    if not (isinstance(health, str) and health.startswith("/")):
        raise ValueError("deploy.json's `health_path` is not a path starting with /")
    return start, health


def example_env(workspace: Path) -> dict[str, str]:
    """NAME=value lines of `.env.example` (comments and malformed lines skipped)."""
    path = workspace / ".env.example"
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name.strip().isidentifier():
            values[name.strip()] = value
    return values


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answer(url: str) -> int | None:
    """The endpoint's status, or None while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def probe(workspace: Path, data_dir: str, wait_seconds: float) -> str:
    """ "" when the app answered 200 within `wait_seconds`; otherwise why not."""
    try:
        start, health = manifest(workspace)
    except (OSError, ValueError) as error:
        return f"cannot read deploy.json: {error}"
    port = free_port()
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    # The deployer sets no PYTHONPATH: an image's own (the coding image points it at the
    # platform's code) must not make an import work here that fails when deployed.
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env = {
        **inherited,
        **example_env(workspace),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "APP_VERSION": "health-check",
        "DATA_DIR": data_dir,
        "PYTHONUNBUFFERED": "1",
    }
    url = f"http://127.0.0.1:{port}{health}"
    command = " ".join(start)
    with tempfile.TemporaryFile() as log:
        try:
            app = subprocess.Popen(
                start,
                cwd=workspace,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            return f"`{command}` (deploy.json's start) cannot run: {error}"
        try:
            problem = _wait_healthy(app, url, command, health, wait_seconds)
        finally:
            _stop(app)
        if not problem:
            return ""
        log.seek(0)
        output = log.read().decode(errors="replace").strip()
    tail = output[-_OUTPUT_TAIL_CHARS:]
    return f"{problem}; the app's output:\n{tail}" if tail else problem


def _wait_healthy(
    app: subprocess.Popen[bytes], url: str, command: str, health: str, wait_seconds: float
) -> str:
    deadline = time.monotonic() + wait_seconds
    last: int | None = None
    while True:
        code = app.poll()
        if code is not None:
            return f"`{command}` exited with status {code} before GET {health} answered"
        last = answer(url)
        if last == 200:
            return ""
        if time.monotonic() >= deadline:
            said = f"answered {last}" if last is not None else "never answered"
            return f"GET {health} {said} within {wait_seconds:g} s of `{command}` starting"
        time.sleep(_POLL_SECONDS)


def _stop(app: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(app.pid, signal.SIGTERM)
    try:
        app.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(app.pid, signal.SIGKILL)
        app.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: app_probe WORKSPACE DATA_DIR WAIT_SECONDS", file=sys.stderr)
        return 64
    problem = probe(Path(argv[0]), argv[1], float(argv[2]))
    print(problem or "healthy")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
