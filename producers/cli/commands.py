"""The operator and user commands of `orchestrator`, each an async function over endpoints."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Callable
from typing import TextIO

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts.topology import CONSUMERS, STREAMS
from infra.bus.codec import event_type_of
from infra.bus.dead_letter import DeadLetterQueue
from infra.bus.publisher import JetStreamPublisher
from infra.db.models import User
from infra.vault import SecretNotFound, VaultClient
from producers.access import operator
from producers.credential_scan import refuse_credentials
from producers.intents import (
    archive_request,
    clarification_answer,
    project_request,
)
from producers.read_model import find_project, project_view
from producers.secret_intake import InvalidSecretName, check_secret_name, store_project_secret

from .connection import Endpoints, database, nats_client

Out = Callable[[str], None]


async def as_operator(endpoints: Endpoints, login: str) -> str:
    """The operator's user id, registered as an admin if new, so the coordinator accepts it.

    Whoever runs the host CLI holds the database credentials (`producers.access.operator`); the
    coordinator checks every intent's user against the users table, so the row must exist. An
    existing row is left as it is: an operator an admin blocked stays blocked.
    """
    person = operator(login)
    async with database(endpoints) as sessions, sessions() as session, session.begin():
        await session.execute(
            pg_insert(User)
            .values(id=person.id, role=person.role, status=person.status, added_by="cli")
            .on_conflict_do_nothing(index_elements=["id"])
        )
    return person.id


#: Where the credential refusal points: the secret command reads the value from stdin.
HOW_TO_STORE = 'printf %s "$VALUE" | orchestrator secrets set <project> NAME'


async def request(endpoints: Endpoints, description: str, user: str, out: Out) -> int:
    refuse_credentials(description, how_to_store=HOW_TO_STORE)
    event = project_request(description, user_id=await as_operator(endpoints, user), source="cli")
    async with nats_client(endpoints) as nc:
        await JetStreamPublisher.from_client(nc).publish(event)
    out(f"project {event.project_id}")
    out(f"flow    {event.correlation_id}")
    out(f"follow it with: orchestrator status {event.project_id}")
    return 0


async def answer(endpoints: Endpoints, ref: str, text: str, user: str, out: Out) -> int:
    refuse_credentials(text, how_to_store=HOW_TO_STORE)
    async with database(endpoints) as sessions, sessions() as session:
        project = await find_project(session, ref)
    event = clarification_answer(
        project.id, project.flow_id, text, user_id=await as_operator(endpoints, user), source="cli"
    )
    async with nats_client(endpoints) as nc:
        await JetStreamPublisher.from_client(nc).publish(event)
    out(f"answer sent for project {project.id}")
    return 0


async def archive(
    endpoints: Endpoints, ref: str, reason: str, out: Out, user: str | None = None
) -> int:
    async with database(endpoints) as sessions, sessions() as session:
        project = await find_project(session, ref)
    user_id = await as_operator(endpoints, user or getpass.getuser())
    event = archive_request(project.id, project.flow_id, reason, user_id=user_id)
    async with nats_client(endpoints) as nc:
        await JetStreamPublisher.from_client(nc).publish(event)
    out(f"archive requested for project {project.id}")
    return 0


async def status(endpoints: Endpoints, ref: str, as_json: bool, out: Out) -> int:
    async with database(endpoints) as sessions, sessions() as session:
        view = await project_view(session, ref)
    if as_json:
        out(
            json.dumps(
                {
                    "id": str(view.id),
                    "flow_id": str(view.flow_id),
                    "name": view.name,
                    "slug": view.slug,
                    "state": view.state,
                    "url": view.url,
                    "error": view.error,
                    "offline": view.offline,
                    "missing_secrets": list(view.missing_secrets),
                    "timeline": [
                        {
                            "at": t.occurred_at.isoformat(),
                            "type": t.event_type,
                            "actor": t.actor,
                            "state": t.state,
                            "summary": t.summary,
                        }
                        for t in view.timeline
                    ],
                },
                indent=2,
            )
        )
        return 0
    out(f"project  {view.id}  {view.name or '(unnamed yet)'}")
    out(f"state    {view.state}" + ("  [offline mode]" if view.offline else ""))
    if view.url:
        out(f"url      {view.url}")
    if view.error:
        out(f"error    {view.error}")
    for name in view.missing_secrets:
        project_ref = view.slug or str(view.id)
        out(f'waits    {name}: printf %s "$VALUE" | orchestrator secrets set {project_ref} {name}')
    out("timeline")
    for t in view.timeline:
        out(f"  {t.occurred_at:%Y-%m-%d %H:%M:%S}  {t.actor:<16} {t.event_type:<32} {t.summary}")
    return 0


async def events_tail(
    endpoints: Endpoints,
    subjects: str,
    from_start: bool,
    follow: bool,
    out: Out,
    stop: asyncio.Event | None = None,
) -> int:
    """Print events as streams store them: one ephemeral ordered consumer per stream."""
    stop = stop or asyncio.Event()
    policy = DeliverPolicy.ALL if from_start else DeliverPolicy.NEW
    async with nats_client(endpoints) as nc:
        js = nc.jetstream()
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def forward(msg: Msg) -> None:
            when = msg.metadata.timestamp.strftime("%H:%M:%S.%f")[:-3] if msg.metadata else ""
            await queue.put(f"{when}  {_describe(msg.subject, msg.headers, msg.data)}")

        for stream in STREAMS:
            if _matches(stream.subjects[0], subjects):
                await js.subscribe(
                    stream.subjects[0] if subjects == ">" else subjects,
                    stream=stream.name,
                    cb=forward,
                    ordered_consumer=True,
                    deliver_policy=policy,
                )
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                if not follow:
                    break
                continue
            out(line)
    return 0


def _matches(stream_subject: str, wanted: str) -> bool:
    return wanted == ">" or wanted.split(".", 1)[0] == stream_subject.split(".", 1)[0]


def _describe(subject: str, headers: dict[str, str] | None, data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return f"{subject}  (not JSON, {len(data)} bytes)"
    if not isinstance(body, dict):
        return f"{subject}  {str(body)[:120]}"
    kind = event_type_of(subject, headers)
    project = body.get("project_id", "")
    extra = body.get("text") or body.get("question") or body.get("reason") or body.get("url") or ""
    return f"{kind:<32} {body.get('actor', '?'):<18} {str(project)[:8]}  {str(extra)[:100]}"


async def lag(endpoints: Endpoints, out: Out) -> int:
    async with nats_client(endpoints) as nc:
        jsm = nc.jsm()
        out(f"{'durable':<22} {'stream':<8} {'pending':>8} {'ack pending':>12} {'redelivered':>12}")
        for spec in CONSUMERS:
            try:
                info = await jsm.consumer_info(spec.stream.name, spec.durable)
            except Exception as exc:  # a missing durable is a row, not a crash
                out(f"{spec.durable:<22} {spec.stream.name:<8} {'-':>8} {'-':>12} {'-':>12}  {exc}")
                continue
            out(
                f"{spec.durable:<22} {spec.stream.name:<8} {info.num_pending or 0:>8} "
                f"{info.num_ack_pending or 0:>12} {info.num_redelivered or 0:>12}"
            )
    return 0


async def dlq(
    endpoints: Endpoints, action: str, seq: int | None, consumer: str | None, out: Out
) -> int:
    async with nats_client(endpoints) as nc:
        queue = DeadLetterQueue(nc.jsm(), JetStreamPublisher.from_client(nc))
        if action == "list":
            letters = await queue.list(consumer)
            if not letters:
                out("the dead-letter queue is empty")
            for letter in letters:
                out(
                    f"{letter.seq:>6}  {letter.failed_at[:19]}  {letter.consumer:<20} "
                    f"{letter.subject:<30} x{letter.deliveries}  {letter.error[:90]}"
                )
            return 0
        if seq is None:
            out(f"`dlq {action}` needs a sequence number: see `orchestrator dlq list`")
            return 2
        if action == "show":
            shown = await queue.get(seq)
            if shown is None:
                out(f"no dead letter with sequence {seq}; see `orchestrator dlq list`")
                return 1
            out(f"sequence    {shown.seq}")
            out(f"consumer    {shown.consumer}")
            out(f"subject     {shown.subject}")
            out(f"deliveries  {shown.deliveries}")
            out(f"failed at   {shown.failed_at}")
            out(f"error       {shown.error}")
            out("headers")
            for key, value in sorted(shown.original_headers.items()):
                out(f"  {key}: {value}")
            out("body")
            out(shown.data.decode(errors="replace"))
            return 0
        try:
            replayed = await queue.replay(seq)
        except LookupError as exc:
            out(str(exc))
            return 1
        out(f"replayed dead letter {seq} to {replayed.subject} (consumer {replayed.consumer})")
        return 0


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
            JetStreamPublisher.from_client(nc),
            project_id=project.id,
            flow_id=project.flow_id,
            name=name,
            value=value,
            user_id=user_id,
        )
    out(f"stored {name} for project {project.id} (secret/{event.vault_path})")
    return 0


def read_value(source: TextIO) -> str:
    """All of stdin: a multi-line value (a PEM key) keeps every line and its final newline;
    a one-line value loses the newline `echo` adds."""
    raw = source.read()
    if raw.count("\n") == 1 and raw.endswith("\n"):
        return raw.rstrip("\r\n")
    return raw


#: Platform secrets the system reads, and the field each process expects.
PLATFORM_SECRETS = {
    "llm": ("api_key",),
    "github": ("token",),
    "telegram": ("token",),
    "registry": ("registry", "username", "token"),
}


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
