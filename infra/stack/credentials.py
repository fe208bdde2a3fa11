"""Per-process credential files: how a secret reaches one process of the stack and no other.

A secret in argv is visible to every user through `ps`; a secret in the environment is
inherited by everything the process starts (the engineer's test runs, ansible, git). So each
process gets a directory `<state>/credentials/<process>/` (mode 0700) holding one file per
secret (mode 0600), and only the file's path travels in its environment
(`ORCH_VAULT__SECRET_ID_FILE`, `ORCH_DATABASE__URL_FILE`). The process reads the files when its
settings load (and the Vault client re-reads the secret id at each login, so a rotated one takes
effect), and none of its children inherits a value.
"""

from __future__ import annotations

import os
from pathlib import Path

CREDENTIALS_DIR = "credentials"
SECRET_ID_FILE = "vault-secret-id"  # noqa: S105 -- a file name, not a secret
DATABASE_URL_FILE = "database-url"


class CredentialFiles:
    """The credentials directories under one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / CREDENTIALS_DIR

    def directory(self, process: str) -> Path:
        """`<root>/<process>`, created private (0700) if missing and made private if not."""
        path = self.root / process
        for directory in (self.root, path):
            directory.mkdir(mode=0o700, exist_ok=True)
            directory.chmod(0o700)
        return path

    def write(self, process: str, name: str, value: str) -> Path:
        """Replace `<process>/<name>` atomically with a 0600 file holding `value`."""
        path = self.directory(process) / name
        write_private(path, value)
        return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically; the file is 0600 from its first byte."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
