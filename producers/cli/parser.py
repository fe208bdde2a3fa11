"""The `orchestrator` command line: every command, its arguments, and the module that runs it.

Building the parser imports only the standard library and light vocabularies (roles, operation
names): `orchestrator --help`, `<command> --help` and a mistyped argument answer at once, without
loading NATS, SQLAlchemy, Vault or the LLM stack. Each command names the module that runs it
(`run`); `producers.cli.main` imports that module, and nothing else, once the command is chosen.
On the development machine `--help` went from about 2.7 s to about 0.1 s.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeAlias

from infra.db.enums import ProjectState, UserRole
from infra.project_operations import Operation

from .exit_codes import exit_codes_help

#: Platform secrets the system reads, and the field each process expects.
PLATFORM_SECRETS = {
    "llm": ("api_key",),
    # The coder's own provider key, when its provider is not the analyst's (ORCH_CODER_LLM__*).
    "llm_coder": ("api_key",),
    "github": ("token",),
    # A read-only GitHub token for the indexer, which reads released commits and never pushes.
    "github_read": ("token",),
    "telegram": ("token",),
    "registry": ("registry", "username", "token"),
}

SAMPLE = (
    "An HTTP service that tracks my expenses: each expense has an amount, a category and a date; "
    "I want to add, list and delete expenses over a REST API."
)

_ROLES = [role.value for role in UserRole]

_OPERATION_HELP = {
    Operation.REDEPLOY: "deploy a live project again (its current commit, or --commit)",
    Operation.RESTART: "restart a live project's running release, without a new deploy",
    Operation.ROLLBACK: "serve a live project's previous release again",
    Operation.RETRY: "resume a failed project from the step that failed",
}

#: Runs the commands the HTTP API serves, in remote mode (`producers.cli.endpoints.remote_api`).
REMOTE_MODULE = "producers.cli.remote"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Describe a service in words; get it specified, built, tested and deployed. "
        "Every command that reads takes --json: one JSON document on stdout (with --follow, "
        "one object per line).",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=_default_state_dir(),
        help="where the local stack keeps its data (default: $ORCH_STATE_DIR or ./.state)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _run_by(
        sub.add_parser("up", help="start the embedded stack and every consumer; Ctrl-C stops it"),
        "producers.cli.up",
    )
    _project_commands(sub)
    _bus_commands(sub)
    _secrets(sub)
    _servers(sub)
    _tokens(sub)
    _users(sub)
    _run_by(
        sub.add_parser("chat", help="chat with the system in this terminal (no Telegram)"),
        "producers.cli.chat_command",
    )
    _demo(sub)
    _operations(sub)
    _change(sub)
    _adopt(sub)
    return parser


def _run_by(
    parser: argparse.ArgumentParser, module: str, *, remote: bool = False
) -> argparse.ArgumentParser:
    """`module`'s `handle(args)` runs the command (and every action under it); with `remote`,
    the HTTP API serves it too (`producers.cli.remote`, when `ORCH_REMOTE__*` are set)."""
    parser.set_defaults(run=module)
    if remote:
        parser.set_defaults(remote=REMOTE_MODULE)
    return parser


def _default_state_dir() -> Path:
    return Path(os.environ.get("ORCH_STATE_DIR", ".state")).absolute()


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _follow(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--follow",
        action="store_true",
        help="print the timeline as it grows until the project is active, failed, archived or "
        "waits for you; the exit code says which (see below)",
    )
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="with --follow: how often to read the project (default 1)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError("an interval is between 0.1 and 60 seconds")
    return value


def _project_commands(sub: Subparsers) -> None:
    p = _run_by(
        sub.add_parser(
            "request",
            help="ask for a new project",
            epilog=exit_codes_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ),
        "producers.cli.commands",
        remote=True,
    )
    p.add_argument("description", help="what the service should do, in your own words")
    p.add_argument("--user", default=getpass.getuser(), help="who is asking (default: you)")
    _json(p)
    _follow(p)

    p = _run_by(
        sub.add_parser("answer", help="answer the analyst's question about a project"),
        "producers.cli.commands",
        remote=True,
    )
    p.add_argument("project", help="project id, id prefix or slug")
    p.add_argument("text", help="your answer")
    p.add_argument("--user", default=getpass.getuser())

    p = _run_by(
        sub.add_parser(
            "status",
            help="a project's state and timeline",
            epilog=exit_codes_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ),
        "producers.cli.status",
        remote=True,
    )
    p.add_argument("project", help="project id, id prefix or slug")
    _json(p)
    _follow(p)

    p = _run_by(
        sub.add_parser("projects", help="every project, newest first (archived ones on request)"),
        "producers.cli.projects",
        remote=True,
    )
    p.add_argument(
        "--state",
        action="append",
        choices=[state.value for state in ProjectState],
        help="only projects in this state (repeatable)",
    )
    p.add_argument("--user", help="only this person's projects (a users-table id)")
    p.add_argument("--all", action="store_true", help="archived projects too")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _json(p)

    p = _run_by(
        sub.add_parser("archive", help="retire a project and release its port"),
        "producers.cli.commands",
        remote=True,
    )
    p.add_argument("project")
    p.add_argument("--reason", default="archived by operator")


def _bus_commands(sub: Subparsers) -> None:
    p = _run_by(sub.add_parser("events", help="the event stream"), "producers.cli.bus")
    events_sub = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    t = events_sub.add_parser("tail", help="follow events live")
    t.add_argument("--subject", default=">", help="filter, e.g. 'project.>' (default: all)")
    t.add_argument("--all", action="store_true", help="start from the oldest stored event")
    t.add_argument("--no-follow", action="store_true", help="print what is stored, then exit")
    t.add_argument("--json", action="store_true", help="one JSON object per event and line")

    p = _run_by(
        sub.add_parser(
            "lag", help="pending, ack-pending and redelivered counts per durable consumer"
        ),
        "producers.cli.bus",
    )
    _json(p)

    p = _run_by(
        sub.add_parser(
            "reconcile",
            help="find repositories, releases and ports no project owns, and projects whose "
            "repository is gone; free ports nothing listens on (the repo process runs it)",
        ),
        "producers.cli.reconcile",
    )
    _json(p)

    p = _run_by(sub.add_parser("dlq", help="the dead-letter queue"), "producers.cli.bus")
    dlq_sub = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    d = dlq_sub.add_parser("list", help="list dead letters")
    d.add_argument("--consumer", help="only this durable's dead letters")
    _json(d)
    for action, text in (("show", "show one dead letter"), ("replay", "re-deliver one")):
        d = dlq_sub.add_parser(action, help=text)
        d.add_argument("seq", type=int, help="sequence number from `dlq list`")
        if action == "show":
            _json(d)


def _secrets(sub: Subparsers) -> None:
    p = _run_by(
        sub.add_parser("secrets", help="project secrets (values go to Vault only)"),
        "producers.cli.secrets_command",
    )
    secrets_sub = p.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    s = secrets_sub.add_parser(
        "list", help="a project's secret names: stored in Vault, or awaited (never values)"
    )
    s.set_defaults(remote=REMOTE_MODULE)
    s.add_argument("project", help="project id, id prefix or slug")
    _json(s)
    s = secrets_sub.add_parser(
        "set", help="store a secret; the whole of stdin is the value (multi-line keys too)"
    )
    s.set_defaults(remote=REMOTE_MODULE)
    s.add_argument("project")
    s.add_argument("name", help="variable name, e.g. TELEGRAM_BOT_TOKEN")
    s = secrets_sub.add_parser(
        "set-platform", help="store a platform secret (LLM key, GitHub, bot, registry token)"
    )
    s.add_argument("name", choices=sorted(PLATFORM_SECRETS))
    s.add_argument("field", help="api_key for llm; token for github and telegram; ...")


def _servers(sub: Subparsers) -> None:
    parser = _run_by(
        sub.add_parser(
            "servers",
            help="deploy targets: add, list, set, bootstrap, drain, resume, retire, remove",
        ),
        "producers.cli.servers",
    )
    actions = parser.add_subparsers(dest="servers_command", required=True, metavar="ACTION")

    p = actions.add_parser(
        "add",
        help="register a server (SSH key to Vault, host key pinned)",
        description="Register a deploy target. The private key is stored in Vault at "
        "servers/NAME, never in the database; the host key is pinned so SSH never trusts "
        "on first use.",
    )
    p.add_argument("name", help="inventory name (lowercase, digits, '.', '_', '-')")
    p.add_argument("--host", required=True, help="address SSH connects to")
    p.add_argument("--ssh-port", type=int, default=22, help="SSH port (default 22)")
    p.add_argument("--user", default="deploy", help="SSH login (default deploy)")
    p.add_argument("--key-file", type=Path, required=True, help="SSH private key file")
    p.add_argument("--labels", default="", help="comma-separated, e.g. gpu,eu")
    p.add_argument("--capacity", type=int, default=20, help="most projects at once (default 20)")
    p.add_argument("--deploy-slots", type=_slots, default=None, metavar="N|none",
                   help="deploys it takes at once (default none: only the deployer's limit)")
    p.add_argument("--ports", default="20000-20999", help="port range LOW-HIGH for services")
    p.add_argument("--public-host", default="", help="address users reach (default: --host)")
    pin = p.add_mutually_exclusive_group(required=True)
    pin.add_argument("--host-key", help="known_hosts line to pin, e.g. 'ssh-ed25519 AAAA...'")
    pin.add_argument("--scan", action="store_true", help="fetch it once with ssh-keyscan")

    _json(actions.add_parser("list", help="the inventory, with allocated ports per server"))

    p = actions.add_parser(
        "set",
        help="change a server's deploy slots",
        description="How many deploys the server takes at once: further deploys to it wait "
        "(and are retried) until one finishes. `none` leaves only the deployer's own "
        "concurrency. The next deploy obeys it; running ones finish.",
    )
    p.add_argument("name")
    p.add_argument("--deploy-slots", type=_slots, required=True, metavar="N|none")

    p = actions.add_parser("remove", help="unregister a server and delete its key")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="also drop its port allocations")

    for action, help_text in (
        ("drain", "take no new projects; the ones there stay (ready -> draining)"),
        ("resume", "take new projects again (draining -> ready)"),
        ("retire", "for good, once no project holds a port there (-> retired)"),
    ):
        actions.add_parser(action, help=help_text).add_argument("name")

    p = actions.add_parser(
        "bootstrap",
        help="prepare a server over SSH with Ansible and make it ready",
        description="Run infra/ansible/prepare_server.yml (idempotent) as a root-capable login "
        "with the server's key from Vault and its pinned host key: Python 3 and venv, "
        "start-stop-daemon, the orch-deploy account and sudoers rule, the deploy root, and an "
        "nftables table allowing SSH and the server's port range. Success makes it ready.",
    )
    p.add_argument("name")
    p.add_argument("--login", default="root", help="root-capable SSH login (default root)")
    p.add_argument(
        "--deploy-root",
        default=os.environ.get("ORCH_DEPLOYER__DEPLOY_ROOT", "/srv/orchestrator"),
        help="where releases go; must match ORCH_DEPLOYER__DEPLOY_ROOT (its default)",
    )
    p.add_argument(
        "--firewall-file",
        default="/etc/orchestrator/firewall.nft",
        help="where the nftables table is written (default /etc/orchestrator/firewall.nft)",
    )
    p.add_argument(
        "--no-firewall-apply",
        dest="firewall_apply",
        action="store_false",
        help="write and check (nft -c) the table but do not load it",
    )


def _slots(text: str) -> int | None:
    """A number of deploy slots, or `none` for no limit of the server's own."""
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of slots (or `none`)") from exc


def _tokens(sub: Subparsers) -> None:
    parser = _run_by(
        sub.add_parser("tokens", help="HTTP API tokens: create, list, revoke"),
        "producers.cli.tokens",
    )
    actions = parser.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")

    p = actions.add_parser(
        "create",
        help="issue a token (printed once)",
        description="Issue an HTTP API token. It is printed once and stored only as a "
        "SHA-256; projects created with it belong to the user api:USER.",
    )
    p.add_argument("name", help="token name, e.g. the integration using it (unique)")
    p.add_argument("--user", help="who the token acts for (default: the token's name)")
    p.add_argument(
        "--role",
        choices=_ROLES,
        default=UserRole.MEMBER.value,
        help="member: the user's own projects; admin: also every user and the /admin routes "
        "(default: member)",
    )
    p.add_argument(
        "--expires-in",
        metavar="DURATION",
        help="refuse the token after this long, e.g. 90m, 12h, 30d, 2w (default: never)",
    )

    _json(actions.add_parser("list", help="tokens with their user, last use and status"))

    p = actions.add_parser("revoke", help="refuse a token from now on")
    p.add_argument("name")


def _users(sub: Subparsers) -> None:
    """`users add|list|block|unblock|set-role|invite|set-budget|set-project-budget`."""
    parser = _run_by(
        sub.add_parser("users", help="people: add, list, block, unblock, roles, invites, budgets"),
        "producers.cli.users",
    )
    actions = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    p = actions.add_parser("add", help="let someone in (or re-activate them)")
    p.add_argument("user", help="Telegram id, or telegram:<id> / api:<name> / cli:<login>")
    p.add_argument("--role", choices=_ROLES, default=UserRole.MEMBER.value)
    _json(actions.add_parser("list", help="everyone with role, status and who added them"))
    for action, text in (("block", "refuse someone from now on"), ("unblock", "let them back in")):
        p = actions.add_parser(action, help=text)
        p.add_argument("user")
    p = actions.add_parser("set-role", help="make someone admin or member")
    p.add_argument("user")
    p.add_argument("role", choices=_ROLES)
    p = actions.add_parser("invite", help="a one-time invite code for the bot (shown once)")
    p.add_argument("--role", choices=_ROLES, default=UserRole.MEMBER.value)
    p.add_argument("--hours", type=int, default=48, help="how long it stays valid")
    p.add_argument("--bot", default="", help="the bot's username, to print the t.me link")
    p = actions.add_parser("set-budget", help="a person's monthly LLM budget in USD")
    p.add_argument("user")
    p.add_argument("usd", type=_budget, help="amount in USD, or `none` for the default")
    p = actions.add_parser("set-project-budget", help="one project's LLM budget in USD")
    p.add_argument("project", help="project id, id prefix or slug")
    p.add_argument("usd", type=_budget, help="amount in USD, or `none` for the default")


def _budget(text: str) -> Decimal | None:
    """`12.50` dollars, or `none` to fall back to the configured default."""
    if text.strip().lower() in {"none", "default"}:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD (or `none`)") from exc
    if value < 0 or not value.is_finite():
        raise argparse.ArgumentTypeError("a budget is zero or more USD")
    return value


def _demo(sub: Subparsers) -> None:
    parser = _run_by(
        sub.add_parser(
            "demo", help="start the stack, build and deploy a sample project, print its URL"
        ),
        "producers.cli.demo",
    )
    parser.add_argument("--description", default=SAMPLE, help="what to build (default: a sample)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the URL")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the stack running after the URL is printed (Ctrl-C stops it)",
    )


def _operations(sub: Subparsers) -> None:
    for operation, text in _OPERATION_HELP.items():
        parser = _run_by(
            sub.add_parser(operation.value, help=text), "producers.cli.operations", remote=True
        )
        parser.add_argument("project", help="project id, id prefix or slug")
        if operation is Operation.REDEPLOY:
            parser.add_argument(
                "--commit",
                type=_commit,
                help="a full 40-hex commit of the project's repository to deploy",
            )
        parser.add_argument("--user", default=getpass.getuser(), help="who asks (default: you)")
        parser.set_defaults(operation=operation)


def _commit(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{40}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a full 40-hex commit id")
    return text


def _change(sub: Subparsers) -> None:
    p = _run_by(
        sub.add_parser(
            "change",
            help="ask for a change to a live project (its next spec revision)",
            description="The analyst revises the spec for the change (asking a question when "
            "it is unclear: answer with `orchestrator answer`), the code is changed from the "
            "project's current commit, tested and deployed with rollback. Offline mode makes "
            "the changes its rules can express and says when a change needs an LLM.",
        ),
        "producers.cli.changes",
        remote=True,
    )
    p.add_argument("project", help="project id, id prefix or slug")
    p.add_argument("text", help="the change, in your own words")
    p.add_argument("--user", default=getpass.getuser(), help="who is asking (default: you)")


def _adopt(sub: Subparsers) -> None:
    p = _run_by(
        sub.add_parser(
            "adopt",
            help="deploy an existing repository (a git URL on this system's git host)",
            description="The repository is read, never run, to write its spec (language, start "
            "command, tests, variables from .env.example, deploy.json, Dockerfile); its own "
            "tests run in the sandbox, the secrets it declares are asked for (store them with "
            "`orchestrator secrets set`), and it is deployed like any other project.",
        ),
        "producers.cli.adopt",
        remote=True,
    )
    p.add_argument("url", help="git URL, e.g. git://127.0.0.1:9418/notes.git")
    p.add_argument("--user", default=getpass.getuser(), help="who is asking (default: you)")
