"""A throwaway sshd on 127.0.0.1: the local deploy target, reached exactly like a real server.

It has its own host key (so clients pin it with a known_hosts line instead of turning host key
checking off) and one client key pair whose public half is the only authorized key. Ansible and
the ops checks then exercise real SSH, sftp included.

Started as root (as under `make demo` and in the test harness) it admits only the dedicated
deploy account `orch-deploy` (created here, with its sudoers drop-in: see
`infra.stack.deploy_account`), never root, and releases go under a marked deploy root below
/srv/orchestrator that project users can traverse. Started as another user it admits that user
only; such a target cannot create project users, so deploys to it are refused with that reason.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import socket
from pathlib import Path

from infra.stack.deploy_account import (
    DEPLOY_ROOT_MARKER,
    SHARED_DEPLOY_BASE,
    ensure_deploy_account,
    prepare_deploy_root,
    running_as_root,
)
from infra.stack.ports import free_port
from infra.stack.process import ManagedProcess, run_checked

SSHD_BINARY = Path("/usr/sbin/sshd")
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")
# sshd refuses to start without its privilege separation directory.
PRIVSEP_DIR = Path("/run/sshd")


class Sshd(ManagedProcess):
    """sshd accepting only the generated client key, for the current user."""

    def __init__(
        self, data_dir: Path, port: int | None = None, *, admit_root: bool = False
    ) -> None:
        """`admit_root`: root may log in too (with the same key), like the fresh host that
        `orchestrator servers bootstrap` prepares; never for the stack itself."""
        super().__init__("sshd", data_dir)
        self.port = port or free_port()
        self.admit_root = admit_root and running_as_root()

    @property
    def host(self) -> str:
        """Where clients connect."""
        return "127.0.0.1"

    @property
    def user(self) -> str:
        """The account clients log in as: `orch-deploy` under root, else whoever runs the stack."""
        return "orch-deploy" if running_as_root() else getpass.getuser()

    @property
    def deploy_root(self) -> Path:
        """Where releases go on this target; stable per data dir, so a restarted stack finds it."""
        if not running_as_root():
            return self.data_dir.parent / "deployments"
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
        return SHARED_DEPLOY_BASE / f"stack-{digest}" / "deployments"

    @property
    def host_key_path(self) -> Path:
        """The server's ed25519 host key."""
        return self.data_dir / "ssh_host_ed25519_key"

    @property
    def client_key_path(self) -> Path:
        """The private key that may log in."""
        return self.data_dir / "client_ed25519"

    @property
    def client_private_key(self) -> str:
        """The client private key in OpenSSH format (what gets stored in Vault)."""
        return self.client_key_path.read_text()

    @property
    def known_hosts_line(self) -> str:
        """`[127.0.0.1]:<port> ssh-ed25519 AAAA...`: pins the host key for this port."""
        key_type, key_body = self.host_key_path.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {key_type} {key_body}"

    @property
    def config_path(self) -> Path:
        """The generated sshd_config."""
        return self.data_dir / "sshd_config"

    def _prepare(self) -> None:
        if not SSHD_BINARY.is_file():
            raise FileNotFoundError(
                f"{SSHD_BINARY} not found; install it with `apt-get install openssh-server`"
            )
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        for key, comment in ((self.host_key_path, "host"), (self.client_key_path, "client")):
            if not key.exists():
                run_checked(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                     f"orchestrator-local-{comment}", "-f", str(key)],
                    what=f"generating the sshd {comment} key",
                )  # fmt: skip
        authorized = self.data_dir / "authorized_keys"
        authorized.write_text(self.client_key_path.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        if running_as_root():
            ensure_deploy_account()
            prepare_deploy_root(self.deploy_root)
            # The state dir's `deployments` still leads to the releases (operators, tests).
            alias = self.data_dir.parent / "deployments"
            if not alias.exists() and not alias.is_symlink():
                alias.symlink_to(self.deploy_root, target_is_directory=True)
            # sshd reads an AuthorizedKeysFile as the logging-in user, who cannot reach a data
            # dir under root's private temp dir; root reads it for sshd instead (a fixed file).
            keys = [
                "AuthorizedKeysFile none",
                f"AuthorizedKeysCommand /usr/bin/cat {authorized}",
                "AuthorizedKeysCommandUser root",
            ]
        else:
            keys = [f"AuthorizedKeysFile {authorized}"]
        self.config_path.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {self.host_key_path}",
                    *keys,
                    f"AllowUsers {self.user}" + (" root" if self.admit_root else ""),
                    f"PidFile {self.data_dir / 'sshd.pid'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin " + ("prohibit-password" if self.admit_root else "no"),
                    # The data dir may live under a group-writable temp dir sshd would reject.
                    "StrictModes no",
                    "UsePAM no",
                    # Ansible opens several sessions at once and copies files over sftp.
                    "MaxStartups 64",
                    "MaxSessions 64",
                    f"Subsystem sftp {SFTP_SERVER}",
                    "",
                ]
            )
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sshd; a deploy root nothing was deployed to is removed with it (test stacks)."""
        super().stop(timeout)
        root = self.deploy_root
        if running_as_root() and root.is_dir() and not any(p.is_dir() for p in root.iterdir()):
            (root / DEPLOY_ROOT_MARKER).unlink(missing_ok=True)
            root.rmdir()
            with contextlib.suppress(OSError):
                root.parent.rmdir()
            alias = self.data_dir.parent / "deployments"
            if alias.is_symlink():
                alias.unlink()

    def _command(self) -> list[str]:
        return [str(SSHD_BINARY), "-D", "-e", "-f", str(self.config_path)]

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as conn:
                return conn.recv(4).startswith(b"SSH-")
        except OSError:
            return False
