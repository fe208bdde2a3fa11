"""`python -m infra.vault_file PATH KEY OUT`: one value of a Vault secret into a private file.

The processes read the PostgreSQL URL (which carries the password) from a file when their
settings load (`ORCH_DATABASE__URL_FILE`), as the local stack hands it to them. In Kubernetes
an init container runs this first, in the same pod and under the same service account: it logs
in to Vault the way the process will (ORCH_VAULT__AUTH=kubernetes and the process's role),
reads KEY of the KV v2 secret at PATH and writes it to OUT (mode 0600) on an in-memory volume
that only this pod mounts. So no Kubernetes Secret holds the URL, and a process reads only what
its own role's policies allow.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from infra.settings import get_settings
from infra.stack.credentials import write_private
from infra.vault import SecretNotFound, VaultClient, VaultError


async def copy_value(
    vault: VaultClient, path: str, key: str, out: Path, *, kv_mount: str = "secret"
) -> None:
    """Write `key` of the secret at `path` to `out`; raise SecretNotFound if either is absent."""
    await vault.login()
    try:
        secret = await vault.read_secret(path)
    except SecretNotFound:
        secret = {}
    if not secret.get(key):
        # An operator stores it before installing; the pod's init container retries meanwhile.
        raise SecretNotFound(
            f"Vault has no `{key}` at {kv_mount}/{path}; store it with "
            f"`bao kv put -mount={kv_mount} {path} {key}=...`"
        )
    write_private(out, secret[key])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.vault_file", description=__doc__)
    parser.add_argument("path", help="the KV v2 path, e.g. platform/database")
    parser.add_argument("key", help="the key whose value is written, e.g. url")
    parser.add_argument("out", type=Path, help="the file to write (mode 0600)")
    args = parser.parse_args(argv)
    settings = get_settings().vault
    vault = VaultClient.from_settings(settings)
    try:
        asyncio.run(copy_value(vault, args.path, args.key, args.out, kv_mount=settings.kv_mount))
    except (SecretNotFound, VaultError) as error:
        raise SystemExit(str(error)) from error
    except OSError as error:
        raise SystemExit(f"{args.out} cannot be written ({error.strerror})") from error
    print(f"{args.path} `{args.key}` written to {args.out}")


if __name__ == "__main__":
    main()
