"""The unprivileged system user that sandboxed code runs as when the engineer runs as root.

Under `make demo` the engineer is root; model-written code must not be. A dedicated system
user (`orch-sandbox` by default, no home, no shell) is created once, idempotently, and every
sandboxed process runs with its uid and gid and no supplementary groups. Its process count is
what RLIMIT_NPROC bounds, so a fork bomb cannot starve the platform's own processes.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from consumers.engineer.sandbox.port import SandboxUnavailable
from infra.system_accounts import change_accounts


@dataclass(frozen=True)
class SandboxUser:
    name: str
    uid: int
    gid: int


def ensure_sandbox_user(name: str) -> SandboxUser:
    """Return the user `name`, creating it as a system user (no home, no login) if missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = _create(name)
    if entry.pw_uid == 0:
        raise SandboxUnavailable(
            f"the sandbox user {name!r} is root; set ORCH_ENGINEER_SANDBOX_USER to an "
            "unprivileged user"
        )
    return SandboxUser(name, entry.pw_uid, entry.pw_gid)


def _create(name: str) -> pwd.struct_passwd:
    result = change_accounts(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name]
    )  # fmt: skip
    # 9: created a moment ago by another engineer process on this host.
    if result.returncode not in (0, 9):
        raise SandboxUnavailable(
            f"could not create the sandbox user {name!r} (useradd exited {result.returncode}: "
            f"{result.stderr.strip()}); create it by hand or run the engineer as a non-root user"
        )
    return pwd.getpwnam(name)


async def chown_tree(root: Path, uid: int, gid: int, *, skip: tuple[str, ...] = ()) -> None:
    """Give every entry under `root` (and `root`) to uid:gid without following symlinks.

    `skip` names top-level entries left alone (the checkout's `.git` stays the engineer's).
    """
    await asyncio.to_thread(_chown_tree, root, uid, gid, skip)


def _chown_tree(root: Path, uid: int, gid: int, skip: tuple[str, ...]) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for directory, dirs, files in os.walk(root, followlinks=False):
        if Path(directory) == root:
            dirs[:] = [name for name in dirs if name not in skip]
            files = [name for name in files if name not in skip]
        for name in (*dirs, *files):
            try:
                os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)
            except FileNotFoundError:
                continue
