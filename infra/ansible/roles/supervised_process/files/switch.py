"""Switch the project's service to a release, or stop it, in one remote Python start.

Run as the project's user by roles/supervised_process (tasks/switch.yml):
`python3 -c <this> <project_root> <pid_file> <supervisor_python> <current_link> <release_dir>
<shared venv or "">` with supervise.py's source on stdin, or with release_dir "stop" to stop the
service and remove `current`. The steps and their order are those of the tasks they replace
(the release's `.venv` link, install.yml, stop.yml, start.yml and the `current` link: six module
runs, each a Python start and AnsiballZ on the target):
0. link the release's `.venv` to the shared venv roles/release_venv found, when one is given;
1. install `bin/supervise.py` (0755) when its content differs;
2. stop whatever release runs (start-stop-daemon, TERM then KILL, a stopped service is fine);
3. start the release under the supervisor, detached (start-stop-daemon --background);
4. point `current` at it by renaming a temporary link over the old one (atomic).
A failed step exits non-zero with the command and its stderr on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()}")


def _install(path: str, source: str) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == source and os.stat(path).st_mode & 0o7777 == 0o755:
                return
    except OSError:
        pass
    temporary = f"{path}.new"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(source)
    os.chmod(temporary, 0o755)  # noqa: S103 - as install.yml installed it
    os.replace(temporary, path)


def _link(target: str, link: str) -> None:
    temporary = f"{link}.new"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def main() -> None:
    project_root, pid_file, python, current_link, release_dir, shared_venv = sys.argv[1:7]
    supervisor = os.path.join(project_root, "bin", "supervise.py")
    if release_dir != "stop":
        if shared_venv:
            _link(shared_venv, os.path.join(release_dir, ".venv"))
        _install(supervisor, sys.stdin.read())
    _run(["start-stop-daemon", "--stop", "--pidfile", pid_file, "--remove-pidfile",
          "--retry", "TERM/10/KILL/5", "--oknodo"])  # fmt: skip
    if release_dir == "stop":
        if os.path.lexists(current_link):
            os.unlink(current_link)
        return
    _run(["start-stop-daemon", "--start", "--background", "--make-pidfile", "--pidfile",
          pid_file, "--chdir", release_dir, "--exec", python, "--", supervisor, release_dir,
          os.path.join(project_root, "logs", "service.log")])  # fmt: skip
    _link(release_dir, current_link)


main()
