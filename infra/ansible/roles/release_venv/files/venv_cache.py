"""Print the shared virtualenv for the requirements on stdin, building it once per hash.

Run by the deploy account (never by a project's user): `python3 -c <this> <cache dir>`, the
release's requirements.txt on stdin. Releases whose requirements (and Python) are the same
share one venv, so a redeploy, a rollback or another project on the same template installs
nothing. The venv belongs to the deploy account and is read-only to everyone else: a project
runs from it but cannot change it for another project.

- The key is the SHA-256 of the Python version and the requirement lines (stripped, comments
  dropped, sorted), so a reordered or re-commented file hits the same venv.
- A cache directory that is missing or not the deploy account's to write (a server prepared
  before it existed) prints an empty line: the release builds its own venv.
- Only plain requirements are cached (a name, extras, version specifiers, markers); a line
  with a pip option, a URL or a path prints an empty line and the release builds its own venv.
- pip installs wheels only (`--only-binary=:all:`): no package code runs as the deploy
  account. The engineer's sandbox installs the same way, so code that passed its tests
  installs here.
- One build per key at a time (a lock file); the venv counts only once its `.complete` marker
  exists, written last, so a build that died halfway is removed and redone.
An install that fails here (say, a package with no wheel) prints an empty line too, with
pip's output on stderr: the release then builds its own venv as before, and its error is the
one reported. Exit 0 either way.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys

PLAIN = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*"  # name
    r"(\[[A-Za-z0-9._,\s-]*\])?"  # extras
    r"\s*([<>=!~]=?\s*[A-Za-z0-9.*+!_-]+(\s*,\s*[<>=!~]=?\s*[A-Za-z0-9.*+!_-]+)*)?"  # versions
    r"\s*(;[^@/\\]*)?$"  # environment marker
)
COMPLETE = ".complete"


def requirement_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return sorted(lines)


def main(cache_dir: str, text: str) -> int:
    lines = requirement_lines(text)
    usable = os.path.isdir(cache_dir) and os.access(cache_dir, os.W_OK | os.X_OK)
    if not usable or any(not PLAIN.match(line) for line in lines):
        print("")
        return 0
    os.umask(0o022)
    key_source = sys.version + "\n" + "\n".join(lines)
    key = "py" + "".join(sys.version.split()[0].split(".")[:2]) + "-"
    key += hashlib.sha256(key_source.encode()).hexdigest()[:24]
    venv = os.path.join(cache_dir, key)
    with open(os.path.join(cache_dir, key + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(venv, COMPLETE)):
            print(venv)
            return 0
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        requirements = os.path.join(venv, "requirements.txt")
        with open(requirements, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        if lines:
            result = subprocess.run(
                [os.path.join(venv, "bin", "pip"), "install", "--quiet", "--only-binary=:all:",
                 "--disable-pip-version-check", "--no-input", "-r", requirements],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
            )
            if result.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                sys.stderr.write(result.stdout[-3000:])
                print("")
                return 0
        with open(os.path.join(venv, COMPLETE), "w") as handle:
            handle.write(key_source + "\n")
    print(venv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.stdin.read()))
