"""`orchestrator secrets list | set | set-platform`: values go to Vault, never to the bus or a log.

A project secret's name travels on the bus (`project.secret.stored`), so a deploy waiting for
it resumes; a platform secret (LLM key, GitHub, bot, registry token) is only written to Vault,
and the processes read it at their next start or use. `list` prints names only: it lists the
keys under the project's Vault folder and never reads a value.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import TextIO

from infra.vault import SecretNotFound, VaultClient, project_secret_path
from producers.read_model import find_project
from producers.secret_intake import InvalidSecretName, check_secret_name, store_project_secret

from .commands import as_operator
from .connection import nats_client, publisher
from .database import database
from .endpoints import Endpoints, resolve
from .parser import PLATFORM_SECRETS
from .project_output import print_secret_names
from .running import print_line, run
from .stdin_value import read_value

Out = Callable[[str], None]


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    endpoints = resolve(args.state_dir)
    if args.secrets_command == "list":
        return run(secret_list(endpoints, args.project, print_line, as_json=args.json))
    if args.secrets_command == "set-platform":
        return run(platform_secret_set(endpoints, args.name, args.field, sys.stdin, print_line))
    return run(secret_set(endpoints, args.project, args.name, sys.stdin, print_line))


async def secret_set(
    endpoints: Endpoints,
    ref: str,
    name: str,
    value_source: TextIO,
    out: Out,
    user: str | None = None,
) -> int:
    """Store a project secret in Vault; only its name travels on the bus."""
    value = read_value(value_source)
    if not value:
        out(
            'no value given: pipe it on standard input, e.g. `printf %s "$TOKEN" | orchestrator '
            "secrets set <project> NAME` (or `< key.pem` for a multi-line key)"
        )
        return 2
    if not endpoints.vault_token:
        out("no Vault token: set ORCH_VAULT__TOKEN or run against a local stack")
        return 2
    try:
        check_secret_name(name)
    except InvalidSecretName as exc:
        out(str(exc))
        return 2
    async with database(endpoints) as sessions, sessions() as session:
        project = await find_project(session, ref)
    vault = VaultClient(endpoints.vault_addr, token=endpoints.vault_token)
    user_id = await as_operator(endpoints, user or getpass.getuser())
    async with nats_client(endpoints) as nc:
        event = await store_project_secret(
            vault,
            publisher(nc),
            project_id=project.id,
            flow_id=project.flow_id,
            name=name,
            value=value,
            user_id=user_id,
        )
    out(f"stored {name} for project {project.id} (secret/{event.vault_path})")
    return 0


async def secret_list(endpoints: Endpoints, ref: str, out: Out, *, as_json: bool = False) -> int:
    """A project's secret names: those Vault holds and those its deploy still waits for."""
    if not endpoints.vault_token:
        out("no Vault token: set ORCH_VAULT__TOKEN or run against a local stack")
        return 2
    async with database(endpoints) as sessions, sessions() as session:
        project = await find_project(session, ref)
    vault = VaultClient(endpoints.vault_addr, token=endpoints.vault_token)
    folder = project_secret_path(str(project.id), "")
    stored = sorted(key for key in await vault.list_secrets(folder) if not key.endswith("/"))
    missing = sorted(set(project.missing_secrets or ()) - set(stored))
    print_secret_names(project.id, stored, missing, out, as_json)
    return 0


async def platform_secret_set(
    endpoints: Endpoints, name: str, field: str, value_source: TextIO, out: Out
) -> int:
    """Store one field of a platform secret (LLM key, GitHub or bot token) in Vault."""
    if field not in PLATFORM_SECRETS[name]:
        out(f"platform/{name} has the fields {', '.join(PLATFORM_SECRETS[name])}, not {field!r}")
        return 2
    value = read_value(value_source)
    if not value:
        out(
            f'no value given: pipe it on standard input, e.g. `printf %s "$VALUE" | '
            f"orchestrator secrets set-platform {name} {field}`"
        )
        return 2
    vault = VaultClient(endpoints.vault_addr, token=endpoints.vault_token)
    path = f"platform/{name}"
    try:
        current = await vault.read_secret(path)
    except SecretNotFound:
        current = {}
    await vault.write_secret(path, {**current, field: value})
    out(f"stored {field} in secret/{path}; processes read it at their next start or use")
    return 0
