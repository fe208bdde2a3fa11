"""Remote mode: the project commands over the HTTP API, as the token's user.

`producers.cli.main` runs this module instead of the command's own when `ORCH_REMOTE__URL` and
`ORCH_REMOTE__TOKEN` are set and the parser marked the command as one the API serves. It needs
no NATS, PostgreSQL or Vault credentials: the API checks the token, applies the same rules as
the host CLI (a credential in a text, an operation the project's state rules out) and answers
with a `detail` that is printed as it is. Projects are the token's user's (an admin token's:
everyone's), so `--user` is not sent: the token says who asks.

Output is the local commands' where the API returns the same facts: `status` prints the same
lines and `--json` object, `--follow` the same timeline and exit code. `projects --json` has no
`owner`, `port` or `error` (the API's list does not carry them).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from infra.db.enums import ProjectState
from producers.read_model import ProjectView, TimelineEntry

from .api_client import ApiClient, ApiError, api_client, new_idempotency_key
from .endpoints import RemoteApi, remote_api
from .exit_codes import ExitCode
from .json_output import document
from .project_output import (
    SETTLED,
    TimelinePrinter,
    print_project,
    print_requested,
    print_secret_names,
)
from .running import print_line, run
from .stdin_value import read_value
from .tables import table_lines

Out = Callable[[str], None]

#: How long `request --follow` waits for the project to appear. The API shows no refusal (the
#: coordinator records it on a timeline only an operator reads), so a project that never
#: appears ends the follow as failed instead of waiting forever.
APPEAR_WITHIN_SECONDS = 120.0


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`, in remote mode."""
    remote = remote_api()
    if remote is None:
        raise AssertionError("remote mode runs only with ORCH_REMOTE__URL and ORCH_REMOTE__TOKEN")
    if args.command == "projects" and args.user:
        print("orchestrator projects: --user needs direct access; a token lists its user's "
              "projects (an admin's: everyone's)", file=sys.stderr)  # fmt: skip
        return ExitCode.USAGE
    value = read_value(sys.stdin) if _is_secret_set(args) else None
    if value == "":
        print(
            "orchestrator secrets set: no value given: pipe it on standard input, e.g. `printf "
            '%s "$TOKEN" | orchestrator secrets set <project> NAME`',
            file=sys.stderr,
        )
        return ExitCode.USAGE
    try:
        return run(_command(remote, args, value, print_line))
    except ApiError as exc:
        print(f"orchestrator {args.command}: {exc}", file=sys.stderr)
        return ExitCode.FAILED


def _is_secret_set(args: argparse.Namespace) -> bool:
    return bool(args.command == "secrets" and args.secrets_command == "set")


async def _command(remote: RemoteApi, args: argparse.Namespace, value: str | None, out: Out) -> int:
    async with api_client(remote) as api:
        match args.command:
            case "request":
                return await request(
                    api, args.description, out, args.json, args.follow, args.interval
                )
            case "status" if args.follow:
                return await follow(api, args.project, out, args.json, args.interval)
            case "status":
                return await status(api, args.project, out, args.json)
            case "adopt":
                return await adopt(api, args.url, out)
            case "projects":
                return await projects(api, out, args.state, args.all, args.limit, args.json)
            case "answer":
                answer = {"answer": args.text}
                return await publish(api, args.project, "answers", answer, "answer sent", out)
            case "change":
                change = {"change": args.text}
                return await publish(api, args.project, "changes", change, "change sent", out)
            case "archive":
                reason = {"reason": args.reason}
                return await publish(api, args.project, "archive", reason, "archive requested", out)
            case "secrets" if value is not None:
                return await secret_set(api, args.project, args.name, value, out)
            case "secrets":
                return await secret_list(api, args.project, out, args.json)
            case _:
                operation = str(args.operation)
                commit = getattr(args, "commit", None)
                body = {"commit": commit} if commit else None
                done = f"{operation} requested"
                return await publish(api, args.project, operation, body, done, out)


def _project_path(ref: str, *rest: str) -> str:
    return "/".join(["/projects", quote(ref, safe=""), *(quote(part, safe="") for part in rest)])


async def request(
    api: ApiClient, description: str, out: Out, as_json: bool, follow_it: bool, interval: float
) -> int:
    """POST /projects with a key made once here: a retry of this command's request is the same."""
    accepted = await api.post("/projects", {"description": description}, new_idempotency_key())
    print_requested(accepted["project_id"], accepted["flow_id"], out, as_json, follow_it)
    if not follow_it:
        return ExitCode.OK
    project_id = uuid.UUID(accepted["project_id"])
    return await follow(api, str(project_id), out, as_json, interval, requested=project_id)


async def adopt(api: ApiClient, url: str, out: Out) -> int:
    """POST /projects/adopt: the API checks the URL is on this system's git host (422 if not)."""
    accepted = await api.post("/projects/adopt", {"repository_url": url}, new_idempotency_key())
    out(f"project {accepted['project_id']}")
    out(f"flow    {accepted['flow_id']}")
    out(f"adopting {url}")
    out(f"follow it with: orchestrator status {accepted['project_id']}")
    return ExitCode.OK


async def status(api: ApiClient, ref: str, out: Out, as_json: bool) -> int:
    print_project(project_view(await api.get(_project_path(ref))), out, as_json)
    return ExitCode.OK


async def follow(
    api: ApiClient,
    ref: str,
    out: Out,
    as_json: bool,
    interval: float,
    *,
    requested: uuid.UUID | None = None,
) -> int:
    """Poll GET /projects/{ref} and print what `producers.cli.follow` prints over the database.

    `requested` is a project just asked for: until the coordinator accepts it the API answers
    404, which is waited out for `APPEAR_WITHIN_SECONDS` instead of reported.
    """
    printer = TimelinePrinter(out, as_json)
    deadline = asyncio.get_running_loop().time() + APPEAR_WITHIN_SECONDS
    while True:
        try:
            view = project_view(await api.get(_project_path(ref)))
        except ApiError as exc:
            if exc.status != 404 or requested is None:
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise ApiError(
                    f"project {requested} did not appear within {APPEAR_WITHIN_SECONDS:g} s: "
                    "the request was refused or is still queued (an operator sees why in "
                    "`orchestrator status`)"
                ) from None
        else:
            printer.show(view)
            code = SETTLED.get(ProjectState(view.state))
            if code is not None:
                return printer.settled(view, code)
        await asyncio.sleep(interval)


async def projects(
    api: ApiClient,
    out: Out,
    states: list[str] | None,
    include_archived: bool,
    limit: int,
    as_json: bool,
) -> int:
    """GET /projects (at most 100, the API's limit), filtered by state here as the local list is."""
    answer = await api.get("/projects", {"limit": max(1, min(limit, 100))})
    rows: list[dict[str, Any]] = answer["projects"]
    if states:
        rows = [p for p in rows if p["state"] in states]
    elif not include_archived:
        rows = [p for p in rows if p["state"] != ProjectState.ARCHIVED]
    if as_json:
        out(document(rows))
        return ExitCode.OK
    if not rows:
        out("no projects" + (" match" if states else ' yet: orchestrator request "..."'))
        return ExitCode.OK
    table = [
        (
            p["id"][:8],
            (p["slug"] or p["name"] or "(unnamed yet)")[:40],
            p["state"],
            f"{datetime.fromisoformat(p['created_at']):%Y-%m-%d %H:%M}",
            (p["url"] or "")[:120],
        )
        for p in rows
    ]
    for line in table_lines(("project", "name", "state", "created", "url"), table):
        out(line)
    return ExitCode.OK


async def publish(
    api: ApiClient, ref: str, action: str, body: dict[str, Any] | None, done: str, out: Out
) -> int:
    """POST /projects/{ref}/<action>: an answer, a change, an archive or an operation."""
    accepted = await api.post(_project_path(ref, action), body, new_idempotency_key())
    event = f" (event {accepted['event_id']})" if "event_id" in accepted else ""
    out(f"{done} for project {accepted['project_id']}{event}")
    out(f"follow it with: orchestrator status {accepted['project_id']}")
    return ExitCode.OK


async def secret_set(api: ApiClient, ref: str, name: str, value: str, out: Out) -> int:
    await api.put(_project_path(ref, "secrets", name), {"value": value})
    out(f"stored {name} for project {ref}")
    return ExitCode.OK


async def secret_list(api: ApiClient, ref: str, out: Out, as_json: bool) -> int:
    """Names only, as the local command prints them: stored, and those the deploy waits for."""
    view = project_view(await api.get(_project_path(ref)))
    stored = sorted((await api.get(_project_path(ref, "secrets")))["names"])
    missing = sorted(set(view.missing_secrets) - set(stored))
    print_secret_names(view.id, stored, missing, out, as_json)
    return ExitCode.OK


def project_view(detail: dict[str, Any]) -> ProjectView:
    """The API's `ProjectDetail` as the read model's view, so it prints as `status` prints it."""
    return ProjectView(
        id=uuid.UUID(detail["id"]),
        flow_id=uuid.UUID(detail["flow_id"]),
        name=detail["name"],
        slug=detail["slug"],
        state=detail["state"],
        user_id="",
        url=detail["url"],
        error=detail["error"],
        offline=detail["offline"],
        created_at=datetime.fromisoformat(detail["created_at"]),
        timeline=tuple(
            TimelineEntry(
                datetime.fromisoformat(t["at"]), t["type"], t["actor"], t["state"], t["summary"]
            )
            for t in detail["timeline"]
        ),
        missing_secrets=tuple(detail["missing_secrets"]),
    )
