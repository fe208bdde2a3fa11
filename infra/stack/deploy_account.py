"""The dedicated deploy account on this machine: what a deploy target needs before the first deploy.

Deploys log in as `orch-deploy`, never as root and never as the stack's own user. Its whole
privilege is a sudoers drop-in (checked with `visudo -cf` before it is installed): run
`orch-project-admin` (create a project's user and directory, kill its processes, remove it) as
root, and anything as a project's own user. A deploy root is usable only once it is a root-owned
directory with the helper's marker file, so the helper cannot be pointed at `/usr` or `/etc`.

The embedded stack's sshd prepares all of this when it starts as root; a remote server gets the
same files from `infra/ansible/prepare_server.yml`. Every step is idempotent; stacks starting at
once take turns (a lock in /run), a user created meanwhile counts as created, and files are
replaced atomically.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.system_accounts import change_accounts

ANSIBLE_FILES = Path(__file__).resolve().parents[1] / "ansible" / "files"
DEPLOY_USER = "orch-deploy"
DEPLOY_HOME = Path("/var/lib/orch-deploy")
HELPER_PATH = Path("/usr/local/libexec/orch-project-admin")
SUDOERS_PATH = Path("/etc/sudoers.d/orch-deploy")
DEPLOY_ROOT_MARKER = ".orchestrator-deploy-root"
#: Where the embedded stack deploys when it runs as root (every ancestor must be traversable).
SHARED_DEPLOY_BASE = Path("/srv/orchestrator")
#: One venv per requirements hash, built by the deploy account and read-only to project users
#: (infra/ansible/roles/release_venv; the role's default `venv_cache_dir`).
VENV_CACHE_DIR = Path("/var/cache/orch-deploy/venvs")
#: Taken while the account is prepared, so stacks starting at once take turns (root's /run).
PREPARE_LOCK = Path("/run/orchestrator-deploy-account.lock")


class DeployAccountError(RuntimeError):
    """The machine cannot be prepared as a deploy target; the message says what to install."""


def running_as_root() -> bool:
    return os.geteuid() == 0


def _install(path: Path, content: bytes, mode: int) -> None:
    """Write `content` to `path` (root-owned, `mode`) by renaming a temporary file over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_bytes() == content and path.stat().st_mode & 0o7777 == mode:
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _check_sudoers(content: bytes) -> None:
    """`visudo -cf` on a copy: a broken drop-in would disable sudo for everyone."""
    with tempfile.NamedTemporaryFile(suffix=".sudoers") as draft:
        draft.write(content)
        draft.flush()
        result = subprocess.run(
            ["visudo", "-cf", draft.name], capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        raise DeployAccountError(
            f"the deploy sudoers drop-in is invalid: {result.stdout}{result.stderr}"
        )


def _password_field(user: str, shadow: Path = Path("/etc/shadow")) -> str | None:
    """The second field of `user`'s line in the shadow file (root reads it), None if absent."""
    for line in shadow.read_text(encoding="utf-8").splitlines():
        name, _, rest = line.partition(":")
        if name == user:
            return rest.partition(":")[0]
    return None


def _change_accounts(argv: list[str], accept: tuple[int, ...] = (0,)) -> None:
    result = change_accounts(argv)
    if result.returncode not in accept:
        raise DeployAccountError(
            f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}"
        )


@contextmanager
def _preparing(lock: Path = PREPARE_LOCK) -> Iterator[None]:
    """One preparation at a time on this machine: the first stack of a fresh machine creates
    the account, and the ones starting beside it then find it ready."""
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_deploy_account() -> str:
    """Create `orch-deploy`, install the helper and its sudoers rule; return the account name."""
    if not running_as_root():
        raise DeployAccountError("only root can create the deploy account; run the stack as root")
    with _preparing():
        return _prepare_deploy_account()


def _prepare_deploy_account() -> str:
    for tool in ("sudo", "visudo", "useradd", "setfacl"):
        if not any((Path(d) / tool).exists() for d in ("/usr/bin", "/usr/sbin")):
            raise DeployAccountError(
                f"{tool} is missing; install it with `apt-get install sudo acl passwd`"
            )
    try:
        pwd.getpwnam(DEPLOY_USER)
    except KeyError:
        # A login shell is needed (Ansible runs /bin/sh); there is no password to log in with.
        # 9: created meanwhile by something that does not take the lock (prepare_server.yml).
        _change_accounts(
            ["useradd", "--system", "--user-group", "--create-home", "--home-dir",
             str(DEPLOY_HOME), "--shell", "/bin/sh", DEPLOY_USER],
            accept=(0, 9),
        )  # fmt: skip
    # useradd locks the new account ("!"), and sshd without PAM refuses a locked account; "*"
    # is unlocked but matches no password, so the key stays the only way in.
    if _password_field(DEPLOY_USER) != "*":
        _change_accounts(["usermod", "--password", "*", DEPLOY_USER])
    _install(HELPER_PATH, (ANSIBLE_FILES / "orch-project-admin").read_bytes(), 0o755)
    sudoers = (ANSIBLE_FILES / "sudoers-orch-deploy").read_bytes()
    _check_sudoers(sudoers)
    _install(SUDOERS_PATH, sudoers, 0o440)
    ensure_venv_cache(DEPLOY_USER)
    return DEPLOY_USER


def ensure_venv_cache(user: str, path: Path = VENV_CACHE_DIR) -> Path:
    """The shared venv directory: owned by `user` (the deploy account), 0711, parents root's.

    Project users run their releases from venvs in it and cannot write there, nor list it (what
    other projects install is theirs to know); the deploy account builds one venv per
    requirements hash (roles/release_venv/files/venv_cache.py).
    """
    entry = pwd.getpwnam(user)
    for level in [*reversed(path.parents), path]:
        if not level.exists():
            level.mkdir(exist_ok=True)
            os.chmod(level, 0o755)  # noqa: S103 -- project users pass through to the venvs
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, 0o711)  # noqa: S103 -- project users traverse it; only its owner writes
    return path


def prepare_deploy_root(root: Path) -> Path:
    """Make `root` a deploy root: root-owned, mode 0755, marked; its ancestors must let
    project users through (each project user reaches only its own 0750 directory below)."""
    root = Path(os.path.normpath(root))
    # Created one level at a time with an explicit mode: the stack runs with umask 077.
    for level in [*reversed(root.parents), root]:
        if not level.exists():
            level.mkdir(exist_ok=True)
            os.chown(level, 0, 0)
            os.chmod(level, 0o755)  # noqa: S103 -- project users pass through to their own dir
    os.chown(root, 0, 0)
    os.chmod(root, 0o755)  # noqa: S103 -- project users must traverse it to reach their own dir
    for ancestor in root.parents:
        if not ancestor.stat().st_mode & 0o001:
            raise DeployAccountError(
                f"{ancestor} is not traversable by other users, so project users could not reach "
                f"{root}; choose a deploy root outside it (e.g. under {SHARED_DEPLOY_BASE})"
            )
    _install(root / DEPLOY_ROOT_MARKER, b"orchestrator deploy root\n", 0o644)
    return root
