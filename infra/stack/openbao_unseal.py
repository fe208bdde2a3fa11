"""`python -m infra.stack.openbao_unseal`: keep docker-compose's OpenBao initialised and unsealed.

Compose runs OpenBao as a real server with raft storage in a named volume, not in dev mode, so a
`docker compose restart openbao` or a reboot of the host keeps every secret and AppRole. A
restarted OpenBao starts sealed, though, and a one-shot container would not run again after a
reboot. So `watch` runs beside it for good (restarted by Docker like any service): it asks
the seal status every few seconds and opens the store with `open_store`, the code the embedded
stack's `OpenBaoServer` runs at each of its starts. The first time, it initialises the store
with one unseal key and writes the key and the root token to a 0600 file in a volume that only
it and the bootstrap one-shots mount (`root-token` prints the token for them).

The trade-off, stated in docs/operations.md: a key file on the same host as the data is
auto-unseal for one machine, protecting against nothing that can read the volumes. A production
Vault unseals through a KMS or a transit seal and keeps no root token.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hvac.exceptions
import requests

from infra.stack.openbao_server import (
    StoreNotActive,
    UnsealKeyMissing,
    open_store,
    read_init_file,
)

#: A server that is not up yet, went away between two calls, or is still electing itself:
#: try again at the next check.
_NOT_YET = (requests.RequestException, hvac.exceptions.VaultDown, StoreNotActive)


def watch(addr: str, init_file: Path, interval: float) -> int:
    """Open the store whenever it is sealed, for ever; 1 if it cannot be opened at all.

    A missing key file or a key the store refuses ends the keeper with the reason (Docker then
    restarts it and it says so again), rather than retrying a key that cannot work.
    """
    was_open = False
    while True:
        try:
            open_store(addr, init_file)
        except UnsealKeyMissing as exc:
            print(f"openbao-unseal: {exc}", file=sys.stderr, flush=True)
            return 1
        except hvac.exceptions.InvalidRequest as exc:
            print(f"openbao-unseal: {addr} refused the unseal key in {init_file} ({exc}); that "
                  "file belongs to another store: restore this store's file",
                  file=sys.stderr, flush=True)  # fmt: skip
            return 1
        except _NOT_YET as exc:
            if was_open:
                print(f"openbao-unseal: {addr} not open ({type(exc).__name__}); retrying",
                      file=sys.stderr, flush=True)  # fmt: skip
            was_open = False
        else:
            if not was_open:
                print(f"openbao-unseal: {addr} is initialised and unsealed", flush=True)
            was_open = True
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stack.openbao_unseal",
        description="Initialise OpenBao once and unseal it at every start (docker-compose).",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    keeper = actions.add_parser("watch", help="initialise once, then unseal whenever sealed")
    keeper.add_argument("--addr", required=True, help="OpenBao's API address")
    keeper.add_argument(
        "--interval", type=float, default=2.0, help="seconds between two seal checks"
    )
    token = actions.add_parser("root-token", help="print the root token kept at initialisation")
    for action in (keeper, token):
        action.add_argument(
            "--init-file", type=Path, required=True, help="the unseal key and root token (0600)"
        )
    args = parser.parse_args(argv)
    if args.action == "root-token":
        try:
            print(read_init_file(args.init_file)["root_token"])
        except UnsealKeyMissing as exc:
            print(f"openbao-unseal: {exc}", file=sys.stderr)
            return 1
        return 0
    return watch(args.addr, args.init_file, args.interval)


if __name__ == "__main__":
    sys.exit(main())
