"""A throwaway sshd on 127.0.0.1: the local deploy target, reached exactly like a real server.

It has its own host key (so clients pin it with a known_hosts line instead of turning host key
checking off) and one client key pair whose public half is the only authorized key. Ansible and
the ops checks then exercise real SSH, sftp included.
"""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

from infra.stack.ports import free_port
from infra.stack.process import ManagedProcess, run_checked

SSHD_BINARY = Path("/usr/sbin/sshd")
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")
# sshd refuses to start without its privilege separation directory.
PRIVSEP_DIR = Path("/run/sshd")


class Sshd(ManagedProcess):
    """sshd accepting only the generated client key, for the current user."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__("sshd", data_dir)
        self.port = port or free_port()

    @property
    def host(self) -> str:
        """Where clients connect."""
        return "127.0.0.1"

    @property
    def user(self) -> str:
        """The account clients log in as: whoever runs the stack."""
        return getpass.getuser()

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
        self.config_path.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {self.host_key_path}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {self.data_dir / 'sshd.pid'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
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

    def _command(self) -> list[str]:
        return [str(SSHD_BINARY), "-D", "-e", "-f", str(self.config_path)]

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as conn:
                return conn.recv(4).startswith(b"SSH-")
        except OSError:
            return False
