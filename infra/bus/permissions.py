"""NATS users and their subject permissions, generated from `contracts.topology`.

Why: with one shared NATS user any process (or any code that reaches the bus) could publish
`deploy.requested` and read every durable. Here each process gets its own user, allowed to
publish only the events it emits (`contracts.topology.CONSUMER_EMITS` / `PRODUCER_EMITS`), the
dead letters of its own durables and the JetStream API calls its own durables need (create or
update the durable, read its info, pull from it, acknowledge its messages). Replies come back on
a per-user inbox prefix (`_INBOX_<process>`), so no process can listen to another's pulls.
Memory searches (`memory.search`, core request/reply) may be asked by the analyst and the
engineer only and answered by the indexer only; the indexer replies through `allow_responses`,
which lets it publish to the reply subject of a request it received and nowhere else.
Streams are managed by the `admin` user (the launcher and the operator CLI); other systems get
the `external` user, which may publish intents and nothing else.

The server config holds bcrypt hashes only (`render_authorization`); the clear passwords live in
Vault at `platform/nats/<user>`, readable by that process's policy alone (`infra.bus.credentials`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import bcrypt

from contracts import events as ev
from contracts.topology import (
    CONSUMER_EMITS,
    CONSUMERS,
    DLQ,
    EXTERNAL_PUBLISH,
    MEMORY_RESPONDER,
    MEMORY_SEARCH_SUBJECT,
    MEMORY_SEARCHERS,
    PRODUCER_EMITS,
    QUEUE_READERS,
    STREAMS,
    consumers_of,
    dlq_subject,
)

ADMIN = "admin"
EXTERNAL = "external"
#: Producers that show admins the bus read-only (lag, dead letters): the HTTP API and the bot.
#: Replaying a dead letter republishes any subject, so it stays with the CLI's `admin` user.
MONITORS = frozenset({"api", "telegram_bot"})
#: The lag exporter (`infra.lag_exporter`): reads every stream's and durable's info, nothing else.
LAG_EXPORTER = "lag_exporter"
#: nats-py's default inbox prefix; only clients outside the platform (the `external` user) use it.
DEFAULT_INBOX = "_INBOX"
#: bcrypt cost. Every password is 32 random bytes (`new_passwords`), which no amount of key
#: stretching makes harder to guess, while nats-server pays the cost on every connect, inside
#: the handshake: at cost 10 (about 60 ms of CPU) twenty clients connecting at once on two busy
#: cores queued for seconds, past the server's first PING. Cost 6 is about 4 ms.
BCRYPT_ROUNDS = 6


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix a platform user connects with (nats-py's `inbox_prefix`)."""
    return f"{DEFAULT_INBOX}_{user}"


@dataclass(frozen=True)
class Permissions:
    """What one NATS user may publish and subscribe to (allow lists; all else is denied)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    #: May publish one reply to the reply subject of each message it received (a responder).
    allow_responses: bool = False

    def may_publish(self, subject: str) -> bool:
        """True if a publish to `subject` matches an allowed pattern (NATS wildcard rules)."""
        return any(subject_matches(pattern, subject) for pattern in self.publish)

    def may_subscribe(self, subject: str) -> bool:
        """True if a subscription to the literal `subject` matches an allowed pattern."""
        return any(subject_matches(pattern, subject) for pattern in self.subscribe)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: `*` is one token, a final `>` is one or more tokens."""
    want = pattern.split(".")
    have = subject.split(".")
    for index, part in enumerate(want):
        if part == ">":
            return len(have) > index
        if index >= len(have) or (part != "*" and part != have[index]):
            return False
    return len(have) == len(want)


def _durable_api(stream: str, durable: str) -> list[str]:
    """The JetStream API a process needs for one durable it owns, and nothing on others."""
    return [
        # Create or update (nats-py picks one of these forms by the filter it sends).
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        # Ack, nak, in-progress and term go to the message's reply subject.
        f"$JS.ACK.{stream}.{durable}.>",
        dlq_subject(durable),
    ]


def consumer_permissions(process: str) -> Permissions:
    """A consumer process: its emitted events, progress notifications and its own durables."""
    emits = CONSUMER_EMITS[process]
    specs = consumers_of(process)
    publish: list[str] = [*emits, ev.NotificationRequested.TYPE, "$JS.API.INFO"]
    # Reading a stream's config is how the runtime checks the admin applied the topology.
    publish += [f"$JS.API.STREAM.INFO.{stream.name}" for stream in STREAMS]
    for spec in specs:
        publish += _durable_api(spec.stream.name, spec.durable)
    publish += [
        f"$JS.API.CONSUMER.INFO.{spec.stream.name}.{spec.durable}"
        for spec in QUEUE_READERS.get(process, ())
    ]
    subscribe = [f"{inbox_prefix(process)}.>"]
    if process in MEMORY_SEARCHERS:
        publish.append(MEMORY_SEARCH_SUBJECT)
    if process == MEMORY_RESPONDER:
        subscribe.append(MEMORY_SEARCH_SUBJECT)
    return Permissions(
        _unique(publish), tuple(subscribe), allow_responses=process == MEMORY_RESPONDER
    )


def producer_permissions(process: str) -> Permissions:
    """A producer process: its intents (or ticks), and read-only bus views for the monitors."""
    publish = list(PRODUCER_EMITS[process])
    if process in MONITORS:
        publish += _monitoring_api()
    return Permissions(_unique(publish), (f"{inbox_prefix(process)}.>",))


def _monitoring_api() -> list[str]:
    """Stream and durable info and reading dead letters; never deleting or replaying them."""
    return [
        *(f"$JS.API.STREAM.INFO.{stream.name}" for stream in STREAMS),
        *(f"$JS.API.CONSUMER.INFO.{spec.stream.name}.{spec.durable}" for spec in CONSUMERS),
        f"$JS.API.STREAM.MSG.GET.{DLQ.name}",
    ]


def lag_exporter_permissions() -> Permissions:
    """Stream and durable info of the whole topology: it can neither pull, ack nor publish."""
    publish = [
        *(f"$JS.API.STREAM.INFO.{stream.name}" for stream in STREAMS),
        *(f"$JS.API.CONSUMER.INFO.{spec.stream.name}.{spec.durable}" for spec in CONSUMERS),
    ]
    return Permissions(_unique(publish), (f"{inbox_prefix(LAG_EXPORTER)}.>",))


def all_permissions() -> dict[str, Permissions]:
    """Every NATS user of the platform: one per process, plus `admin` and `external`."""
    users = {name: consumer_permissions(name) for name in CONSUMER_EMITS}
    users |= {name: producer_permissions(name) for name in PRODUCER_EMITS}
    users[LAG_EXPORTER] = lag_exporter_permissions()
    users[ADMIN] = Permissions((">",), (">",))
    users[EXTERNAL] = Permissions(EXTERNAL_PUBLISH, (f"{DEFAULT_INBOX}.>",))
    return users


def new_passwords(users: Iterable[str]) -> dict[str, str]:
    """A fresh random password per user (generated at every stack start)."""
    return {user: secrets.token_urlsafe(32) for user in users}


def bcrypt_hash(password: str) -> str:
    """The `$2a$` bcrypt form nats-server accepts in place of a clear password."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS, prefix=b"2a")).decode()


def render_authorization(
    passwords: Mapping[str, str], permissions: Mapping[str, Permissions] | None = None
) -> str:
    """The `authorization { users = [...] }` block of a single-account nats-server config."""
    return "authorization {\n" + render_users(passwords, permissions) + "}\n"


def render_users(
    passwords: Mapping[str, str], permissions: Mapping[str, Permissions] | None = None
) -> str:
    """The `users = [...]` list with bcrypt hashes only (an account block can `include` it).

    Every value is a JSON string: NATS config treats an unquoted `$` as a variable reference, and
    a bcrypt hash is full of them.
    """
    permissions = permissions if permissions is not None else all_permissions()
    missing = sorted(set(passwords) - set(permissions))
    if missing:
        raise ValueError(f"no NATS permissions for user(s) {', '.join(missing)}")
    entries = []
    for user, password in passwords.items():
        allowed = permissions[user]
        entries.append(
            "    {\n"
            f"      user: {json.dumps(user)}\n"
            f"      password: {json.dumps(bcrypt_hash(password))}\n"
            "      permissions: {\n"
            f"        publish: {{ allow: {json.dumps(list(allowed.publish))} }}\n"
            f"        subscribe: {{ allow: {json.dumps(list(allowed.subscribe))} }}\n"
            + ("        allow_responses: true\n" if allowed.allow_responses else "")
            + "      }\n"
            "    }\n"
        )
    return "  users = [\n" + "".join(entries) + "  ]\n"


def _unique(subjects: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))
