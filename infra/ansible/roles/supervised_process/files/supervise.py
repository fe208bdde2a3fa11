#!/usr/bin/env python3
"""Keep one release of a service running: the supervisor of "process" deploy mode.

Targets have no systemd unit for generated services and no supervisord, so the deploy playbook
installs this stdlib-only script and starts it detached with `start-stop-daemon --background
--make-pidfile`. It loads the release's `.env` into the environment (values are never passed
on a command line), runs the start command from the release's `deploy.json` with the release's
venv first on PATH, and restarts the service with a growing delay when it exits. SIGTERM stops
the service's whole process group, then the supervisor.

It runs as the project's own system user (the playbook starts it with `become_user`), so the
service can read its own `.env` and nobody else's; it refuses to start as root, so a playbook
mistake can never run generated code with full privileges.

Usage: supervise.py <release dir> <log file>
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
#: A run that lasts this long counts as healthy and resets the restart delay.
STABLE_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0


def parse_env_file(path: Path) -> dict[str, str]:
    """Read the `.env` the deployer wrote: NAME='literal' or NAME="escaped" (dotenv rules)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").split("\n"):
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        values[name.strip()] = value
    return values


def service_environment(release: Path) -> dict[str, str]:
    venv_bin = release / ".venv" / "bin"
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(release / ".venv"),
        "HOME": os.environ.get("HOME", str(release)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(parse_env_file(release / ".env"))
    return env


def main(release: Path, log_path: Path) -> int:
    if os.geteuid() == 0 or os.getegid() == 0:
        print(
            "supervise: refusing to run a service as root; start it as the project's user",
            file=sys.stderr,
        )
        return 2
    command = json.loads((release / "deploy.json").read_text(encoding="utf-8"))["start"]
    env = service_environment(release)
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = BACKOFF_START
    with log_path.open("ab", buffering=0) as log:
        while not stopping:
            started = time.monotonic()
            log.write(f"supervise: starting {command} in {release}\n".encode())
            child = subprocess.Popen(
                command, cwd=release, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            code = child.wait()
            if stopping:
                break
            note = f"supervise: service exited with {code}; restarting in {delay:.1f}s\n"
            log.write(note.encode())
            delay = BACKOFF_START if time.monotonic() - started > STABLE_SECONDS else delay
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        if child is not None and child.poll() is None:
            try:
                child.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        log.write(b"supervise: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
