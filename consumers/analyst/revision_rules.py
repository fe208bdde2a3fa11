"""The offline analyst's revisions: a change to a live project's spec, by deterministic rules.

The rules express what the offline templates can render: a new entity (with its CRUD
endpoints and bot commands), a collection endpoint (`/widgets`: a new entity served at that
path), a bot command, and a configuration variable or secret. A change asking for behaviour
("returns totals per month", "sends an e-mail when ...") is code only a model can write, so
it gets a clear refusal naming the settings that turn the LLM on, and the project stays as it
was. A change that names a kind of addition without naming it ("add a command") gets one
question through the usual question flow.
"""

# Russian keywords are this module's data, not look-alike typos.
# ruff: noqa: RUF001

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.spec import (
    BotCommand,
    ConfigVar,
    Endpoint,
    Entity,
    EntityField,
    ProjectSpec,
    ServiceKind,
)

from .rules import ENTITIES, OFFLINE_PREFIX, Question
from .spec_policy import enforce

#: Questions asked about one change before the analyst gives up on it.
MAX_QUESTIONS = 1

NEEDS_LLM = (
    "offline mode cannot make this change: its rules add entities (with their endpoints and "
    "bot commands), collection endpoints such as /widgets, bot commands and configuration "
    "variables, but {what} needs code written by a language model. Set ORCH_LLM__PROVIDER, "
    "ORCH_LLM__BASE_URL and ORCH_LLM__MODEL, store the key with `orchestrator secrets "
    "set-platform llm api_key`, restart the stack and send the change again."
)

#: Wording that asks for behaviour (logic), which templates cannot write.
_LOGIC = (
    r"\breturns?\b", r"\bcomput", r"\bcalculat", r"\bsums?\b", r"\btotals?\b", r"\bcount",
    r"\baverage", r"\bper (day|week|month|year)\b", r"\bsend", r"\bemail", r"\be-mail",
    r"\bnotif", r"\bvalidat", r"\bfilter", r"\bsort", r"\bsearch", r"\bexport", r"\bimport",
    r"\bwhen\b", r"\bif\b", r"\bremove\b", r"\bdelete the\b", r"\brename", r"\bchange the\b",
)  # fmt: skip

_METHOD_PATH = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE)?\s*(/[a-z][a-z0-9_-]{1,40})\b", re.I)
_COMMAND = re.compile(
    r"(?:^|\s)/([a-z][a-z0-9_]{1,31})\b"
    r"|\bcommand\s+(?:called\s+|named\s+|[\"'«])[\"'«]?([a-z][a-z0-9_]{1,31})"
)
_VARIABLE = re.compile(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b")
_VARIABLE_WORDS = (r"\bvariable", r"\bsetting", r"\benv\b", r"\bconfig", r"\bsecret",
                   r"\bapi key", r"\btoken", r"\bпеременн", r"\bнастройк", r"\bсекрет")  # fmt: skip
_SECRET_WORDS = (r"\bsecret", r"\bkey\b", r"\btoken", r"\bpassword", r"\bсекрет", r"\bключ",
                 r"\bтокен", r"\bпарол")  # fmt: skip
_DEFAULT = re.compile(r"\bdefault(?:s| value)?(?: is| of| to|:|=)?\s+[\"']?([\w./:-]{1,80})", re.I)
_ENTITY_NAMED = re.compile(
    r"\b(?:entity|model|resource|table|collection|сущност\w*)\s+(?:called\s+|named\s+)?"
    r"[\"'«]?([A-Za-z][A-Za-z0-9_]{1,40})",
    re.I,
)
_FIELDS = re.compile(r"\bwith (?:the )?fields?\s+(.+?)(?:[.;]|$)", re.I)
_MENTIONS = {
    "endpoint": (r"\bendpoint", r"\broute\b", r"\bэндпоинт"),
    "command": (r"\bcommand", r"\bкоманд"),
    "entity": (r"\bentity", r"\bmodel\b", r"\bresource\b", r"\bсущност"),
    "variable": _VARIABLE_WORDS,
}
_FIELD_TYPES = {"str", "int", "float", "bool", "date", "datetime"}


@dataclass(frozen=True)
class Revision:
    """The revised spec and what differs from the current one, for the timeline."""

    spec: ProjectSpec
    summary: str


@dataclass(frozen=True)
class NeedsLLM:
    """The change is beyond the rules; `reason` tells the user what to do."""

    reason: str


def _matches(text: str, patterns: tuple[str, ...]) -> bool:
    return any(re.search(pattern, text) for pattern in patterns)


def _pascal(word: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\W]+", word) if part)


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if re.search(r"(s|x|z|ch|sh)es$", word):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _fields(change: str) -> tuple[EntityField, ...]:
    found = _FIELDS.search(change)
    if found is None:
        return (
            EntityField(name="name", type="str", description="What it is"),
            EntityField(name="created_at", type="datetime", description="When it was added"),
        )
    fields: list[EntityField] = []
    for part in re.split(r",|\band\b", found.group(1)):
        name, _, kind = part.strip().partition(":")
        name = re.sub(r"\W+", "_", name.strip().lower()).strip("_")
        kind = kind.strip().lower()
        if name:
            fields.append(EntityField(name=name, type=kind if kind in _FIELD_TYPES else "str"))
    return tuple(fields)


class _Builder:
    """Collects additions onto the current spec; `notes` become the revision's summary."""

    def __init__(self, spec: ProjectSpec) -> None:
        self.spec = spec
        self.entities = list(spec.entities)
        self.endpoints = list(spec.endpoints)
        self.commands = list(spec.commands)
        self.config = list(spec.config)
        self.criteria = list(spec.acceptance_criteria)
        self.notes: list[str] = []

    def has_entity(self, name: str) -> bool:
        return any(e.name.lower() == name.lower() for e in self.entities)

    def add_entity(self, name: str, plural: str, fields: tuple[EntityField, ...]) -> None:
        if self.has_entity(name):
            return
        self.entities.append(Entity(name=name, fields=fields))
        added: list[str] = []
        if ServiceKind.HTTP in self.spec.kinds:
            base = f"/{plural}"
            self.endpoints += [
                Endpoint(method="GET", path=base, summary=f"List {plural}"),
                Endpoint(method="POST", path=base, summary=f"Create a {name}"),
                Endpoint(method="GET", path=f"{base}/{{id}}", summary=f"Get one {name}"),
                Endpoint(method="DELETE", path=f"{base}/{{id}}", summary=f"Delete a {name}"),
            ]
            self.criteria.append(f"POST {base} creates a {name} and GET {base} lists it")
            added.append(f"GET/POST {base}")
        if ServiceKind.TELEGRAM_BOT in self.spec.kinds:
            add, show = f"add_{name.lower()}", f"list_{plural}"
            self.commands += [
                BotCommand(command=add, description=f"Add a {name}"),
                BotCommand(command=show, description=f"Show {plural}"),
            ]
            self.criteria.append(f"/{add} stores a {name} and /{show} shows it")
            added.append(f"/{add}, /{show}")
        where = f" ({'; '.join(added)})" if added else ""
        self.notes.append(f"added entity {name}{where}")

    def add_command(self, command: str, description: str) -> None:
        if any(c.command == command for c in self.commands):
            return
        self.commands.append(BotCommand(command=command, description=description))
        self.criteria.append(f"/{command} replies")
        self.notes.append(f"added bot command /{command}")

    def add_variable(self, name: str, secret: bool, default: str | None) -> None:
        if any(v.name == name for v in self.config):
            return
        self.config.append(
            ConfigVar(
                name=name,
                description="Added by a change request",
                secret=secret,
                default=None if secret else default,
            )
        )
        self.notes.append(f"added {'secret' if secret else 'variable'} {name}")

    def build(self, change: str) -> Revision:
        spec = enforce(
            self.spec.model_copy(
                update={
                    "entities": tuple(self.entities),
                    "endpoints": tuple(self.endpoints),
                    "commands": tuple(self.commands),
                    "config": tuple(self.config),
                    "acceptance_criteria": tuple(self.criteria),
                    "summary": f"{self.spec.summary} Change: {' '.join(change.split())[:400]}"[
                        :2000
                    ],
                }
            )
        )
        return Revision(spec=spec, summary=OFFLINE_PREFIX + "; ".join(self.notes) + ".")


def revise(
    spec: ProjectSpec, change: str, answers: list[str], max_questions: int = MAX_QUESTIONS
) -> Revision | Question | NeedsLLM:
    """The revised spec for `change` (plus answers to questions about it), a question, or why
    an LLM is needed."""
    original = " ".join([change, *answers]).strip()
    text = original.lower()
    builder = _Builder(spec)
    # Names (commands, paths, variables) are not wording: `/export` asks for no behaviour.
    wording = _VARIABLE.sub(" ", re.sub(r"/[\w{}/-]+", " ", original)).lower()
    if _matches(wording, _LOGIC):
        return NeedsLLM(NEEDS_LLM.format(what=f"“{' '.join(change.split())[:200]}”"))

    for named in _ENTITY_NAMED.finditer(original):
        word = named.group(1)
        if word.lower() in {"with", "that", "which", "for", "called", "named"}:
            continue
        name = _pascal(_singular(word))
        builder.add_entity(name, _plural(name.lower()), _fields(original))
    for rule in ENTITIES:
        if _matches(text, rule.patterns) and not builder.has_entity(rule.name):
            fields = tuple(EntityField(name=n, type=t, description=d) for n, t, d in rule.fields)
            builder.add_entity(rule.name, rule.plural, fields)
    paths = ServiceKind.HTTP in spec.kinds and not _matches(text, _MENTIONS["command"])
    for found in _METHOD_PATH.finditer(original) if paths else ():
        collection = found.group(2).lstrip("/").lower()
        known = next((r for r in ENTITIES if r.plural == collection), None)
        if known is not None:
            fields = tuple(EntityField(name=n, type=t, description=d) for n, t, d in known.fields)
            builder.add_entity(known.name, known.plural, fields)
        elif "_" not in collection and collection not in {"health"}:
            builder.add_entity(_pascal(_singular(collection)), collection, _fields(original))
    if ServiceKind.TELEGRAM_BOT in spec.kinds:
        for found in _COMMAND.finditer(text):
            command = found.group(1) or found.group(2)
            if command not in {"start", "help"}:
                builder.add_command(command, f"Added by a change request: {original[:200]}")
    if _matches(text, _VARIABLE_WORDS):
        default = _DEFAULT.search(original)
        for found in _VARIABLE.finditer(original):
            name = found.group(1)
            secret = _matches(text, _SECRET_WORDS) or name.endswith(
                ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
            )
            builder.add_variable(name, secret, default.group(1) if default else None)

    if builder.notes:
        return builder.build(original)
    mentioned = [what for what, patterns in _MENTIONS.items() if _matches(text, patterns)]
    if mentioned and len(answers) < max_questions:
        return _question(mentioned[0], spec)
    what = "it" if not mentioned else f"this {mentioned[0]}"
    if mentioned == ["command"] and ServiceKind.TELEGRAM_BOT not in spec.kinds:
        what = "a bot command on a project that is not a Telegram bot"
    return NeedsLLM(NEEDS_LLM.format(what=what))


def _plural(word: str) -> str:
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    return word + "s"


def _question(what: str, spec: ProjectSpec) -> Question:
    examples = {
        "endpoint": "its path, e.g. /contacts (offline mode serves it as a collection you can "
        "add to and list)",
        "command": "its name, e.g. /stats",
        "entity": "its name and fields, e.g. 'entity Contact with fields name, phone'",
        "variable": "its name in UPPER_SNAKE_CASE, e.g. REPORT_CURRENCY (default EUR)",
    }
    return Question(
        text=f"{OFFLINE_PREFIX}Which {what} should I add to {spec.name}? Tell me "
        f"{examples[what]}.",
        missing=(what,),
    )
