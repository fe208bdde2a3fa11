"""The deploy account's root helper (`infra/ansible/files/orch-project-admin`), as archive runs it.

`kill` must leave no process of the project's user running, and must not wait for zombies: a
killed process stays a zombie until its parent reaps it, and where that parent is a slow init
(this machine's reaps orphans every second or two) or a process that never reaps, waiting for
it made each archive seconds slower, or failed it.
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack.deploy_account import prepare_deploy_root

from .conftest import shared_dir

HELPER = Path(__file__).parents[2] / "infra" / "ansible" / "files" / "orch-project-admin"


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/usr/bin/python3", str(HELPER), *args], capture_output=True, text=True, timeout=60
    )


def states(uid: int) -> dict[int, str]:
    """Each process of `uid` (real, effective or saved) with its state letter."""
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
        except (OSError, ValueError):
            continue
        if str(uid) in fields.get("Uid", "").split()[:3]:
            found[int(proc.name)] = fields["State"].strip()[:1]
    return found


@pytest.fixture
def project() -> Iterator[tuple[Path, str, int]]:
    """A marked deploy root and one project in it: (root, slug, the project user's uid)."""
    base = shared_dir("orch-admin-")
    root = prepare_deploy_root(base / "deploy")
    slug = f"admin-{uuid.uuid4().hex[:8]}"
    created = admin("ensure", str(root), slug)
    assert created.returncode == 0, created.stderr
    uid = pwd.getpwnam(created.stdout.strip()).pw_uid
    yield root, slug, uid
    admin("remove", str(root), slug)
    shutil.rmtree(base, ignore_errors=True)


def test_kill_stops_every_process_of_the_user_and_ignores_a_zombie_nobody_reaps(
    project: tuple[Path, str, int],
) -> None:
    root, slug, uid = project
    # Two orphans of the project's user (their shell exits; init adopts them) ...
    subprocess.run(
        ["sh", "-c", "sleep 600 & sleep 600 & exit 0"], user=uid, start_new_session=True,
        check=True,
    )  # fmt: skip
    # ... and a zombie of the user whose parent (root, untouched by kill) never reaps it.
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys, time\n"
         "pid = os.fork()\n"
         f"if pid == 0:\n    os.setuid({uid})\n    os._exit(0)\n"
         # Wait for the child's exit without collecting it: it stays a zombie.
         "os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)\n"
         "print(pid, flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        running = [pid for pid, state in states(uid).items() if state != "Z"]
        assert len(running) == 2, states(uid)

        killed = admin("kill", slug)

        assert killed.returncode == 0, killed.stderr
        left = states(uid)
        assert all(state == "Z" for state in left.values()), left
        assert left.get(zombie) == "Z", "the unreaped zombie is still there, and kill did not wait"
        removed = admin("remove", str(root), slug)
        assert removed.returncode == 0, removed.stderr
        assert not (root / slug).exists()
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
    finally:
        parent.kill()
        parent.wait()
