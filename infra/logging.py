"""Structured JSON logs for every process, with secrets masked before a line leaves the process.

Each process calls `configure_logging` once at start. Every line on stderr is one JSON object
(`timestamp` in ISO UTC, `level`, `logger`, `event`, `process`, plus whatever was bound), and
logs of libraries that use the standard `logging` module (FastStream, nats-py, Alembic, hvac)
go through the same pipeline, so Loki sees one format.

The consumer runtime wraps each message in `bind_message_context`, so every line a handler
writes carries the event id, correlation id and project id without the handler passing them.

Secrets are masked twice, because a log line is the easiest place for one to escape:
- by key: a value under a key that names a secret (`password`, `token`, `api_key`, ...) is
  replaced whatever it is, in nested dicts and lists too;
- by value: every secret the Vault client has read is registered with `register_secret`, and
  any occurrence of it in the rendered line (message, bound values, exception text, traceback)
  becomes `***`. This catches a secret inside an error message from a library we do not control.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"

# Secrets shorter than this are ignored: masking "admin" or "1234" everywhere would garble
# ordinary text and protect nothing worth protecting.
MIN_SECRET_LENGTH = 6

# Lines of a multi-line secret (a PEM private key) this long are masked on their own too,
# so a log that prints part of a key file still hides it.
MIN_SECRET_LINE_LENGTH = 20

# Key words that mark a value as secret. Keys are split into words (snake, kebab, camel case),
# so `prompt_tokens` (the word is "tokens") is not masked while `github_token` and
# `accessToken` are.
_SECRET_WORDS = frozenset({"password", "passwd", "passphrase", "token", "secret", "authorization"})
_SECRET_WORD_PAIRS = frozenset({("private", "key"), ("api", "key"), ("secret", "id")})
_SECRET_COMPACT = frozenset({"apikey", "privatekey", "secretid", "accesstoken", "authtoken"})
# A key that names or locates a secret, rather than holding it, stays readable: events carry
# secret names on purpose (`secret_names`, `api_key_secret_path`).
_REFERENCE_WORDS = frozenset({"name", "names", "path", "paths", "ref", "refs", "mount"})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-zA-Z0-9]+")


def is_secret_key(key: str) -> bool:
    """Whether a log field named `key` holds a secret and must be masked whatever its value."""
    words = [w.lower() for w in _WORD_SPLIT.split(_CAMEL_BOUNDARY.sub("_", key)) if w]
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    if any(w in _SECRET_WORDS or w in _SECRET_COMPACT for w in words):
        return True
    return any(pair in _SECRET_WORD_PAIRS for pair in itertools.pairwise(words))


class _SecretRegistry:
    """Secret values seen by this process, in every textual form they can take in a log line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        # Longest first, so a secret that contains another is masked whole.
        self._ordered: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        forms = set(_textual_forms(value))
        if "\n" in value:
            for line in value.splitlines():
                line = line.strip()
                if len(line) >= MIN_SECRET_LINE_LENGTH:
                    forms.update(_textual_forms(line))
        forms = {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def mask(self, text: str) -> str:
        for value in self._ordered:
            if value in text:
                text = text.replace(value, MASK)
        return text


def _textual_forms(value: str) -> Iterable[str]:
    """The value as written raw, inside a repr (exception args), and JSON-escaped (the output)."""
    raw = value
    in_repr = repr(value)[1:-1]
    yield raw
    yield in_repr
    yield json.dumps(raw)[1:-1]
    yield json.dumps(in_repr)[1:-1]


_SECRETS = _SecretRegistry()


def register_secret(value: str) -> None:
    """Mask `value` in every log line this process writes from now on.

    The Vault client calls this for every secret value it reads; anything else that handles a
    secret (a token from configuration, a generated password) should call it too.
    Values shorter than 6 characters are ignored.
    """
    if len(value) >= MIN_SECRET_LENGTH:
        _SECRETS.add(value)


def _mask_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (MASK if isinstance(k, str) and is_secret_key(k) else _mask_keys(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_mask_keys(v) for v in value]
    return value


def mask_secret_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Processor: replace the values of fields whose names say they are secrets."""
    return {
        k: (MASK if is_secret_key(k) and k != "event" else _mask_keys(v))
        for k, v in event_dict.items()
    }


_LEADING_FIELDS = ("timestamp", "level", "process", "logger", "event")


class RedactingJSONRenderer:
    """Render the event as one JSON line, then mask every registered secret value in it.

    Masking the rendered text (not the event dict) also covers values that only become text
    while rendering: a repr of an object holding a secret, an exception's arguments.
    """

    def __init__(self) -> None:
        self._render = structlog.processors.JSONRenderer(sort_keys=False)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        # The fields every line has come first, so a person reading raw lines finds them.
        ordered = {k: event_dict[k] for k in _LEADING_FIELDS if k in event_dict}
        ordered.update(event_dict)
        rendered = self._render(logger, name, ordered)
        text = rendered if isinstance(rendered, str) else rendered.decode()
        return _SECRETS.mask(text)


def _add_process(process_name: str) -> Processor:
    def add_process(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("process", process_name)
        return event_dict

    return add_process


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates every message with ANSI colours under this key.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    process_name: str, level: str = "INFO", *, stream: TextIO | None = None
) -> None:
    """Send this process's logs, structlog and stdlib alike, as JSON lines to stderr.

    Call once at process start, before the first log line. Calling again replaces the
    configuration (tests do this); loggers are not cached so the new one takes effect at once.
    `stream` exists for tests that read the output; processes leave it at stderr.
    """
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process(process_name),
        _drop_color_message,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            mask_secret_keys,
            RedactingJSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # Libraries that install their own handlers would print a second, unformatted line.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "faststream.access"):
        lib_logger = logging.getLogger(name)
        lib_logger.handlers.clear()
        lib_logger.propagate = True
    logging.captureWarnings(True)


def bind_message_context(
    *,
    event_id: str,
    correlation_id: str,
    project_id: str | None,
    event_type: str,
    consumer: str,
) -> contextlib.AbstractContextManager[None]:
    """Bind one message's identity to every log line written while it is handled.

    The values live in context variables, so concurrent messages handled by the same process
    (each in its own task) never see each other's ids. `project_id` is omitted when the event
    belongs to no project yet.
    """
    bound: MutableMapping[str, str] = {
        "event_id": event_id,
        "correlation_id": correlation_id,
        "event_type": event_type,
        "consumer": consumer,
    }
    if project_id is not None:
        bound["project_id"] = project_id
    return structlog.contextvars.bound_contextvars(**bound)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A logger that writes through the pipeline above; `name` becomes the `logger` field."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
