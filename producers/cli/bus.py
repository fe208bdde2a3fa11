"""`orchestrator events tail | lag | dlq`: the bus as an operator sees it, read from JetStream."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from contracts.topology import CONSUMERS, STREAMS
from infra.bus.codec import event_type_of
from infra.bus.dead_letter import DeadLetter, DeadLetterQueue

from .connection import nats_client, publisher
from .endpoints import Endpoints, resolve
from .json_output import document, record
from .running import print_line, run
from .tables import table_lines

Out = Callable[[str], None]


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    endpoints = resolve(args.state_dir)
    if args.command == "events":
        return run(
            events_tail(
                endpoints, args.subject, args.all, not args.no_follow, print_line, as_json=args.json
            )
        )
    if args.command == "lag":
        return run(lag(endpoints, print_line, as_json=args.json))
    seq = getattr(args, "seq", None)
    consumer = getattr(args, "consumer", None)
    as_json = getattr(args, "json", False)
    return run(dlq(endpoints, args.dlq_command, seq, consumer, print_line, as_json=as_json))


async def events_tail(
    endpoints: Endpoints,
    subjects: str,
    from_start: bool,
    follow: bool,
    out: Out,
    stop: asyncio.Event | None = None,
    *,
    as_json: bool = False,
) -> int:
    """Print events as streams store them: one ephemeral ordered consumer per stream.

    With `as_json` each event is one line holding its stream position, type and whole body
    (events carry secret names and Vault paths, never values).
    """
    stop = stop or asyncio.Event()
    policy = DeliverPolicy.ALL if from_start else DeliverPolicy.NEW
    async with nats_client(endpoints) as nc:
        js = nc.jetstream()
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def forward(msg: Msg) -> None:
            if as_json:
                await queue.put(record(_event_object(msg)))
                return
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


def _event_object(msg: Msg) -> dict[str, object]:
    try:
        body: object = json.loads(msg.data)
    except ValueError:
        body = None
    fields = body if isinstance(body, dict) else {}
    return {
        "stream": msg.metadata.stream if msg.metadata else None,
        "seq": msg.metadata.sequence.stream if msg.metadata else None,
        "at": msg.metadata.timestamp.isoformat() if msg.metadata else None,
        "subject": msg.subject,
        "type": event_type_of(msg.subject, msg.headers),
        "actor": fields.get("actor"),
        "project_id": fields.get("project_id"),
        "event": body,
    }


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


async def lag(endpoints: Endpoints, out: Out, *, as_json: bool = False) -> int:
    """Per durable: pending (waiting), in flight (ack pending) and the concurrency it allows.

    The concurrency is the durable's `max_ack_pending` on the server, which its process sets
    from its settings (ORCH_ENGINEER_CONCURRENCY, ORCH_DEPLOYER__CONCURRENCY) and which counts
    across all its replicas.
    """
    rows: list[dict[str, object]] = []
    async with nats_client(endpoints) as nc:
        jsm = nc.jsm()
        for spec in CONSUMERS:
            row: dict[str, object] = {"durable": spec.durable, "stream": spec.stream.name}
            try:
                info = await jsm.consumer_info(spec.stream.name, spec.durable)
            except Exception as exc:  # a missing durable is a row, not a crash
                row.update(
                    pending=None,
                    ack_pending=None,
                    concurrency=None,
                    redelivered=None,
                    error=str(exc),
                )
            else:
                row.update(
                    pending=info.num_pending or 0,
                    ack_pending=info.num_ack_pending or 0,
                    concurrency=info.config.max_ack_pending,
                    redelivered=info.num_redelivered or 0,
                    error=None,
                )
            rows.append(row)
    if as_json:
        out(document(rows))
        return 0
    header = ["durable", "stream", "pending", "in flight", "concurrency", "redelivered"]
    errors = any(r["error"] for r in rows)
    counts = ("pending", "ack_pending", "concurrency", "redelivered")
    table = [
        [
            r["durable"],
            r["stream"],
            *("-" if r[c] is None else r[c] for c in counts),
            *([r["error"] or ""] if errors else []),
        ]
        for r in rows
    ]
    for line in table_lines(header + (["error"] if errors else []), table, right=(2, 3, 4, 5)):
        out(line)
    return 0


async def dlq(
    endpoints: Endpoints,
    action: str,
    seq: int | None,
    consumer: str | None,
    out: Out,
    *,
    as_json: bool = False,
) -> int:
    async with nats_client(endpoints) as nc:
        queue = DeadLetterQueue(nc.jsm(), publisher(nc))
        if action == "list":
            letters = await queue.list(consumer)
            if as_json:
                out(document([_letter_object(letter) for letter in letters]))
                return 0
            if not letters:
                out("the dead-letter queue is empty")
                return 0
            table = [
                (
                    letter.seq,
                    letter.failed_at[:19],
                    letter.consumer,
                    letter.subject,
                    f"x{letter.deliveries}",
                    letter.error[:90],
                )
                for letter in letters
            ]
            header = ("seq", "failed at", "consumer", "subject", "tries", "error")
            for line in table_lines(header, table, right=(0,)):
                out(line)
            return 0
        if seq is None:
            out(f"`dlq {action}` needs a sequence number: see `orchestrator dlq list`")
            return 2
        if action == "show":
            shown = await queue.get(seq)
            if shown is None:
                out(f"no dead letter with sequence {seq}; see `orchestrator dlq list`")
                return 1
            if as_json:
                out(
                    document(
                        {
                            **_letter_object(shown),
                            "headers": shown.original_headers,
                            "body": shown.data.decode(errors="replace"),
                        }
                    )
                )
                return 0
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


def _letter_object(letter: DeadLetter) -> dict[str, object]:
    return {
        "seq": letter.seq,
        "consumer": letter.consumer,
        "subject": letter.subject,
        "deliveries": letter.deliveries,
        "failed_at": letter.failed_at,
        "error": letter.error,
    }
