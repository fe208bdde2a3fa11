"""`python -m infra.bus.nats_users OUT`: the NATS users of a deployment (compose, Kubernetes).

The local stack does this itself at every start (`infra.stack.launcher`). A deployment whose
NATS runs apart from the orchestrator runs this once per rollout, before NATS starts: it makes
a fresh password for every platform user, stores each in Vault at `platform/nats/<user>` (with
the token in `ORCH_VAULT__TOKEN`, against `ORCH_VAULT__ADDR`), and writes OUT (mode 0600), the
bcrypt-hashed users list with their permissions, for the server's config to `include`. Each
process reads its password from Vault when it starts; a process that still holds an older
password is refused at its next reconnect and is restarted by its supervisor.

`--account NAME` wraps the list in `accounts { NAME { jetstream: enabled ... } }` for a config
that has no account block of its own (the Helm chart's NATS); without it OUT is the bare list,
for a config that includes it inside its account (infra/nats/nats-server.conf).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from infra.bus.credentials import store_credentials
from infra.bus.permissions import all_permissions, new_passwords, render_users
from infra.settings import get_settings
from infra.vault import VaultClient


def users_file(passwords: dict[str, str], account: str | None) -> str:
    """The file's text: the users list, inside an account block when `account` is given."""
    users = render_users(passwords)
    if account is None:
        return users
    return f"accounts {{\n  {account} {{\n    jetstream: enabled\n{users}  }}\n}}\n"


async def generate(out: Path, account: str | None, vault: VaultClient) -> list[str]:
    """Store fresh passwords in Vault, then write `out`; returns the user names."""
    passwords = new_passwords(all_permissions())
    await store_credentials(vault, passwords)
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(users_file(passwords, account))
    return sorted(passwords)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.bus.nats_users", description=__doc__)
    parser.add_argument("out", type=Path, help="where to write the users list (mode 0600)")
    parser.add_argument("--account", help="wrap the list in this JetStream-enabled account")
    args = parser.parse_args()
    settings = get_settings()
    token = settings.vault.token.get_secret_value()
    if not token:
        raise SystemExit(
            "set ORCH_VAULT__TOKEN to a token that may write secret/platform/nats/* "
            "(the bootstrap's or an operator's) and ORCH_VAULT__ADDR to the Vault address"
        )
    vault = VaultClient(settings.vault.addr, token=token)
    users = asyncio.run(generate(args.out, args.account, vault))
    print(f"wrote {len(users)} NATS users to {args.out}: {', '.join(users)}")


if __name__ == "__main__":
    main()
