"""The bubblewrap adapter: model-written code in fresh namespaces, as an unprivileged user.

Each run is `prlimit <limits> bwrap <namespaces and mounts> [setpriv <drop to user>] argv`:
- namespaces: new PID, IPC, UTS, cgroup and (unless `network=True`) network namespaces. A new
  network namespace has only its own loopback, so NATS, Postgres, OpenBao and the git daemon
  on the host's 127.0.0.1 are unreachable; `network=True` is for dependency installs only.
- filesystem: a read-only view of /usr (and the /bin, /lib symlinks), an allowlist of /etc
  files, a fresh /proc that shows only the sandbox's processes, a minimal /dev, a private
  tmpfs /tmp, and only the mounts the caller names. No /root, no home, no state directory,
  no stack.json; the workspace's `.git` is read-only so hooks and config cannot be planted
  for the engineer's own git commands.
- user: as root, bwrap sets up the mounts and `setpriv` drops to the dedicated sandbox user
  with no groups and no capabilities before the command starts; as any other user, bwrap
  maps the current user into a new user namespace. `--die-with-parent` and `--new-session`
  tie the run to the engineer and keep it off the engineer's terminal.
- system calls: a seccomp filter (`seccomp_filter.py`, `--seccomp FD`) refuses the kernel's
  controls, its riskiest interfaces, other processes' memory and new namespaces or mounts.
- environment: `--clearenv`, then exactly the variables the caller passes.
- limits: RLIMIT_CPU, _AS, _NPROC, _NOFILE and _FSIZE through `prlimit`, inherited by every
  process in the run; output cap and wall-clock time-out in `bounded_process`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from consumers.engineer.sandbox.bounded_process import run_bounded
from consumers.engineer.sandbox.port import Mount, SandboxLimits, SandboxResult, SandboxUnavailable
from consumers.engineer.sandbox.sandbox_user import SandboxUser, chown_tree, ensure_sandbox_user
from consumers.engineer.sandbox.seccomp_filter import filter_fd

#: What of /etc a Python test run needs: users and groups (for getpwuid), the loader cache,
#: time zone and locale data. Nothing else of the host's configuration is visible.
_ETC_ALWAYS = (
    "passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "localtime", "timezone", "alternatives", "mime.types", "ssl", "ca-certificates",
    "ca-certificates.conf", "os-release", "debian_version", "lsb-release",
)
#: Extra /etc entries for the install phase: name resolution and pip's configuration.
_ETC_NETWORK = ("resolv.conf", "hosts", "gai.conf", "host.conf", "pip.conf", "xdg/pip")
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Trees that exist in every sandbox before the caller's mounts are added (/tmp is a fresh,
#: empty tmpfs, so directories under it are created like any other).
_BASE = (Path("/usr"), Path("/etc"), Path("/proc"), Path("/dev"))


class BubblewrapSandbox:
    """`Sandbox` adapter over the `bwrap` binary (Debian package `bubblewrap`)."""

    name = "bubblewrap"

    def __init__(self, *, user: str = "orch-sandbox", bwrap: str | None = None) -> None:
        self._user_name = user
        self._bwrap = bwrap
        self._user: SandboxUser | None = None
        self._probed = False
        self._lock = asyncio.Lock()

    async def run(
        self,
        argv: Sequence[str],
        workspace: Path,
        *,
        network: bool,
        limits: SandboxLimits,
        env: Mapping[str, str],
        mounts: Sequence[Mount] = (),
        writable_workspace: bool = True,
    ) -> SandboxResult:
        bwrap = await self._ready()
        all_mounts = [*mounts, Mount(workspace, writable=writable_workspace)]
        command = [
            *self._prlimit(limits),
            bwrap, *self._namespaces(network), *self._system(network),
            *_mount_args(all_mounts),
        ]
        git_dir = workspace / ".git"
        if git_dir.exists():
            command += ["--ro-bind", str(git_dir), str(git_dir)]
        command += ["--chdir", str(workspace), "--clearenv"]
        for name, value in env.items():
            command += ["--setenv", name, value]
        return await self._run_filtered(command, argv, workspace, limits)

    async def _run_filtered(
        self, command: list[str], argv: Sequence[str], cwd: Path, limits: SandboxLimits
    ) -> SandboxResult:
        """Run bwrap's `command` with the seccomp filter on `argv` (a fresh descriptor each)."""
        program = filter_fd()
        try:
            command = [*command, "--seccomp", str(program), "--", *self._drop_privileges(), *argv]
            return await run_bounded(
                command, cwd=cwd, env=_launcher_env(), limits=limits, pass_fds=(program,)
            )
        finally:
            os.close(program)

    async def prepare_writable(self, path: Path) -> None:
        user = await self._sandbox_user()
        if user is not None:
            await chown_tree(path, user.uid, user.gid, skip=(".git",))

    async def reclaim(self, path: Path) -> None:
        if os.geteuid() == 0:
            await chown_tree(path, os.getuid(), os.getgid(), skip=(".git",))

    async def _sandbox_user(self) -> SandboxUser | None:
        if os.geteuid() != 0:
            return None
        if self._user is None:
            self._user = await asyncio.to_thread(ensure_sandbox_user, self._user_name)
        return self._user

    async def _ready(self) -> str:
        """Find bwrap and prove once that it can build a sandbox on this host."""
        # The engineer's PATH is an allowlist too; Debian installs bwrap in /usr/bin.
        bwrap = self._bwrap or shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin")
        if bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed: install the Debian package `bubblewrap` "
                "(`make setup` does); model-written code is never run without a sandbox"
            )
        async with self._lock:
            if not self._probed:
                await self._sandbox_user()
                probe = SandboxLimits(wall_seconds=30.0)
                command = [*self._prlimit(probe), bwrap, *self._namespaces(False),
                           *self._system(False)]  # fmt: skip
                result = await self._run_filtered(command, ["/usr/bin/true"], Path("/"), probe)
                if not result.ok:
                    raise SandboxUnavailable(
                        f"bubblewrap cannot create a sandbox here ({result.describe()}: "
                        f"{result.output.strip()[-300:]}); as a non-root user it needs "
                        "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
                    )
                self._probed = True
        return bwrap

    def _namespaces(self, network: bool) -> list[str]:
        args = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--hostname", "sandbox", "--die-with-parent", "--new-session"]
        if not network:
            args.append("--unshare-net")
        if self._user is None:
            # Not root: a user namespace maps this user; nothing privileged is available.
            args.append("--unshare-user")
        return args

    def _system(self, network: bool) -> list[str]:
        args = ["--ro-bind", "/usr", "/usr"]
        for name in _TOP_LEVEL_LINKS:
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        # Directories bwrap makes for mount points are 0700; the sandbox user must traverse /etc.
        args += ["--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/etc/xdg"]
        for name in (*_ETC_ALWAYS, *(_ETC_NETWORK if network else ())):
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        # A private, empty /tmp that every user in the sandbox may write (sticky, like a host's).
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]  # noqa: S108
        return args

    def _drop_privileges(self) -> list[str]:
        if self._user is None:
            return []
        return ["/usr/bin/setpriv", f"--reuid={self._user.uid}", f"--regid={self._user.gid}",
                "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"]

    def _prlimit(self, limits: SandboxLimits) -> list[str]:
        processes = limits.processes
        if self._user is None:
            # Without a dedicated user the limit counts every process of this user, the
            # engineer's own included: allow that many more.
            processes += _processes_of(os.getuid())
        return [
            "/usr/bin/prlimit",
            f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}",
            f"--as={limits.memory_bytes}",
            f"--nproc={processes}",
            f"--nofile={limits.open_files}",
            f"--fsize={limits.file_size_bytes}",
            "--",
        ]


def _mount_args(mounts: Sequence[Mount]) -> list[str]:
    """Bind each mount at its own path, creating traversable parent directories first."""
    args: list[str] = []
    made: set[Path] = set()
    for mount in sorted(mounts, key=lambda m: len(m.path.parts)):
        path = mount.path.resolve()
        for parent in reversed(path.parents):
            if parent in made or parent in (Path("/"), Path("/tmp")) or any(  # noqa: S108
                parent == base or base in parent.parents for base in _BASE
            ):
                continue
            args += ["--perms", "0755", "--dir", str(parent)]
            made.add(parent)
        args += ["--bind" if mount.writable else "--ro-bind", str(path), str(path)]
        made.add(path)
    return args


def _launcher_env() -> dict[str, str]:
    """The environment of prlimit and bwrap themselves; the command gets `--clearenv`."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except FileNotFoundError:
                continue
    return count
